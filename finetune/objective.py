"""FunASR's SenseVoice loss as a module, so DDP (accelerate) sees one forward per step."""

from __future__ import annotations

import torch

from svlora.model import RICH_PREFIX_LENGTH


class SenseVoiceObjective(torch.nn.Module):
    """CTC on the text + cross-entropy on the 4 rich tags, weighted by the recipe."""

    def __init__(self, model: torch.nn.Module, sensevoice: torch.nn.Module, ctc_weight: float,
                 rich_weight: float):
        super().__init__()
        self.model = model            # the PeftModel (or the SenseVoiceSmall in full mode)
        self.sensevoice = sensevoice  # the SenseVoiceSmall inside it (LoRA layers injected)
        self.ctc_weight, self.rich_weight = ctc_weight, rich_weight

    def forward(self, speech, speech_lengths, text, text_lengths):
        sensevoice, prefix = self.sensevoice, RICH_PREFIX_LENGTH
        encoder_out, encoder_lengths = sensevoice.encode(speech, speech_lengths.clone(), text)
        loss_ctc, _ = sensevoice._calc_ctc_loss(encoder_out[:, prefix:], encoder_lengths - prefix,
                                                text[:, prefix:], text_lengths - prefix)
        loss_rich, rich_accuracy = sensevoice._calc_rich_ce_loss(encoder_out[:, :prefix],
                                                                 text[:, :prefix])
        loss = self.ctc_weight * loss_ctc + self.rich_weight * loss_rich
        return loss, torch.stack([loss_ctc.detach(), loss_rich.detach(),
                                  torch.as_tensor(rich_accuracy, device=loss.device, dtype=loss.dtype)])


def loss_parts(parts: torch.Tensor) -> dict:
    return {"loss_ctc": float(parts[0]), "loss_rich": float(parts[1]),
            "rich_accuracy": float(parts[2])}
