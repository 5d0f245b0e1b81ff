"""FunASR's SenseVoice loss as a module, so DDP (accelerate) sees one forward per step.

The same numbers as SenseVoiceSmall.forward (tests/finetune/test_objective.py), computed
without reading anything back to the host: FunASR's encode looks each clip's language and ITN
query up with `int(tensor)`, its CTC concatenates targets per clip and re-runs the CTC backward
to find NaN gradients, and its label-smoothing loss and accuracy call `.item()` — each a
device→host sync that stalls a GPU step. Here the lookups are tensors and the loss stays on the
device; a non-finite loss is caught when the trainer reads the step's figures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from svlora.model import RICH_PREFIX_LENGTH


def query_lookup(mapping: dict[int, int], size: int, missing: int) -> torch.Tensor:
    """{token id: query-embedding row} as a tensor indexed by token id."""
    table = torch.full((size,), missing, dtype=torch.long)
    for token, row in mapping.items():
        if 0 <= int(token) < size:
            table[int(token)] = int(row)
    return table


class SenseVoiceObjective(torch.nn.Module):
    """CTC on the text + cross-entropy on the 4 rich tags, weighted by the recipe."""

    def __init__(self, model: torch.nn.Module, sensevoice: torch.nn.Module, ctc_weight: float,
                 rich_weight: float):
        super().__init__()
        self.model = model            # the PeftModel (or the SenseVoiceSmall in full mode)
        self.sensevoice = sensevoice  # the SenseVoiceSmall inside it (LoRA layers injected)
        self.ctc_weight, self.rich_weight = ctc_weight, rich_weight
        size = sensevoice.vocab_size
        # an unknown language queries row 0 ("auto"), as FunASR's encode does
        self.register_buffer("language_rows", query_lookup(sensevoice.lid_int_dict, size, 0),
                             persistent=False)
        self.register_buffer("style_rows", query_lookup(sensevoice.textnorm_int_dict, size, -1),
                             persistent=False)

    def encode(self, speech: torch.Tensor, speech_lengths: torch.Tensor, text: torch.Tensor):
        """FunASR's SenseVoiceSmall.encode: [language, event, emotion, ITN] queries before the
        speech; the language query is "auto" with p=0.2 (one CPU draw per clip, as FunASR draws)."""
        sensevoice, batch = self.sensevoice, speech.size(0)
        keep = torch.cat([torch.rand(1) for _ in range(batch)]) > 0.2
        languages = torch.where(keep.to(speech.device, non_blocking=True),
                                self.language_rows[text[:, 0]], 0)
        language_query = sensevoice.embed(languages[:, None])
        style_query = sensevoice.embed(self.style_rows[text[:, 3]][:, None])
        event_emotion = sensevoice.embed(torch.tensor([[1, 2]], device=speech.device)).expand(batch, -1, -1)
        speech = torch.cat((language_query, event_emotion, style_query, speech), dim=1)
        encoder_out, encoder_lengths = sensevoice.encoder(speech, speech_lengths + 4)
        if isinstance(encoder_out, tuple):
            encoder_out = encoder_out[0]
        return encoder_out, encoder_lengths

    def ctc_loss(self, encoder_out, encoder_lengths, targets, target_lengths) -> torch.Tensor:
        """FunASR's CTC (builtin, reduce): summed over clips, divided by the batch size."""
        ctc = self.sensevoice.ctc
        log_probs = ctc.ctc_lo(F.dropout(encoder_out, p=ctc.dropout_rate)).transpose(0, 1).log_softmax(2)
        losses = F.ctc_loss(log_probs, targets.clamp_min(0), encoder_lengths, target_lengths,
                            blank=0, reduction="none")
        return losses.sum() / encoder_out.size(0)

    def rich_loss(self, encoder_out, targets) -> tuple[torch.Tensor, torch.Tensor]:
        """FunASR's label-smoothing KL on the 4 tag frames, and their accuracy, on the device."""
        sensevoice = self.sensevoice
        criterion = sensevoice.criterion_att
        logits = sensevoice.ctc.ctc_lo(encoder_out)
        flat, target = logits.reshape(-1, criterion.size), targets.reshape(-1)
        ignore = target == criterion.padding_idx
        safe = target.masked_fill(ignore, 0)
        with torch.no_grad():
            true_dist = torch.full_like(flat, criterion.smoothing / (criterion.size - 1))
            true_dist.scatter_(1, safe.unsqueeze(1), criterion.confidence)
        kl = criterion.criterion(torch.log_softmax(flat, dim=1), true_dist)
        kept = (~ignore).sum()
        denominator = kept if criterion.normalize_length else logits.size(0)
        loss = kl.masked_fill(ignore.unsqueeze(1), 0).sum() / denominator
        correct = ((flat.argmax(1) == target) & ~ignore).sum()
        return loss, correct.float() / kept.clamp_min(1)

    def forward(self, speech, speech_lengths, text, text_lengths):
        prefix = RICH_PREFIX_LENGTH
        encoder_out, encoder_lengths = self.encode(speech, speech_lengths, text)
        loss_ctc = self.ctc_loss(encoder_out[:, prefix:], encoder_lengths - prefix,
                                 text[:, prefix:], text_lengths - prefix)
        loss_rich, rich_accuracy = self.rich_loss(encoder_out[:, :prefix], text[:, :prefix])
        loss = self.ctc_weight * loss_ctc + self.rich_weight * loss_rich
        return loss, torch.stack([loss_ctc.detach().float(), loss_rich.detach().float(),
                                  rich_accuracy.detach().float()])


def loss_parts(parts) -> dict:
    return {"loss_ctc": float(parts[0]), "loss_rich": float(parts[1]),
            "rich_accuracy": float(parts[2])}
