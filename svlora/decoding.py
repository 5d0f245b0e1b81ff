"""Batched greedy CTC decoding exactly as FunASR's SenseVoiceSmall.inference builds its input."""

from __future__ import annotations

import torch

from svlora.features import pad_features
from svlora.model import BaseModel


def inference_log_probs(sensevoice: torch.nn.Module, features: torch.Tensor, lengths: torch.Tensor,
                        language: str = "auto", itn: str = "woitn") -> tuple[torch.Tensor, torch.Tensor]:
    """CTC log-probabilities [B, T+4, V] with the [language, event, emotion, itn] queries prepended."""
    batch = features.size(0)
    device = features.device
    language_id = sensevoice.lid_dict.get(language, 0)
    queries = torch.tensor([[language_id, 1, 2, sensevoice.textnorm_dict[itn]]], device=device)
    query_embeddings = sensevoice.embed(queries).repeat(batch, 1, 1).to(features.dtype)
    # FunASR order: language, then the event/emotion pair, then text-norm, then speech.
    speech = torch.cat((query_embeddings, features), dim=1)
    encoder_out, encoder_lengths = sensevoice.encoder(speech, lengths.to(device) + 4)
    if isinstance(encoder_out, tuple):
        encoder_out = encoder_out[0]
    return sensevoice.ctc.log_softmax(encoder_out), encoder_lengths


def greedy_ids(log_probs: torch.Tensor, lengths: torch.Tensor, blank_id: int = 0) -> list[list[int]]:
    best = log_probs.argmax(dim=-1)
    sequences = []
    for row, length in zip(best, lengths.tolist()):
        collapsed = torch.unique_consecutive(row[:length])
        sequences.append([int(t) for t in collapsed if int(t) != blank_id])
    return sequences


@torch.inference_mode()
def transcribe_features(base: BaseModel, features: list[torch.Tensor], batch_size: int = 16,
                        language: str = "auto", itn: str = "woitn") -> list[str]:
    """Decoded SenseVoice outputs ('<|en|><|HAPPY|><|Speech|><|woitn|>text') per feature matrix."""
    module = base.model
    was_training = module.training
    module.eval()
    order = sorted(range(len(features)), key=lambda i: features[i].shape[0])
    outputs: list[str] = [""] * len(features)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        padded, lengths = pad_features([features[i] for i in chunk])
        log_probs, out_lengths = inference_log_probs(module, padded.to(base.device), lengths,
                                                     language, itn)
        for index, ids in zip(chunk, greedy_ids(log_probs.float(), out_lengths)):
            outputs[index] = base.decode(ids)
    module.train(was_training)
    return outputs


def transcribe_paths(base: BaseModel, paths: list[str], batch_size: int = 16,
                     language: str = "auto", itn: str = "woitn") -> list[str]:
    """Decoded outputs for audio files (any format soundfile reads; resampled to 16 kHz mono)."""
    from svlora.audio import AudioDecodeError, load_audio
    from svlora.errors import SvloraError

    features = []
    for path in paths:
        try:
            features.append(base.features(load_audio(path)))
        except (AudioDecodeError, FileNotFoundError) as error:
            raise SvloraError(f"{path}: {error}") from error
    return transcribe_features(base, features, batch_size, language, itn)
