import dataclasses

import numpy as np
import pytest
import torch
import yaml

from svlora.decoding import greedy_ids
from svlora.frontend import batch_features, compute_features, frontend_config, kaldi_fbank
from svlora.model import stdout_to_stderr


@pytest.fixture(scope="module")
def funasr_frontend(tiny_model_dir):
    with stdout_to_stderr():
        from funasr.frontends.wav_frontend import WavFrontend
    conf = yaml.safe_load((tiny_model_dir / "config.yaml").read_text())["frontend_conf"]
    conf = {**conf, "cmvn_file": str(tiny_model_dir / "am.mvn"), "dither": 0.0}
    return WavFrontend(**conf)


def speech_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    tone = 0.2 * np.sin(2 * np.pi * (180 + 40 * np.sin(3 * t)) * t)
    return (tone + rng.normal(0, 0.02, t.size)).astype(np.float32)


@pytest.mark.parametrize("seconds", [0.02, 0.3, 1.0, 2.37, 7.0])
def test_features_equal_funasr_wavfrontend(funasr_frontend, tiny_model_dir, seconds):
    samples = speech_like(seconds, seed=int(seconds * 100))
    expected, _ = funasr_frontend(torch.from_numpy(samples)[None], [samples.size])
    ours = compute_features(samples, frontend_config(tiny_model_dir))
    assert ours.shape == expected[0].shape
    # float32 rounding in kaldi-native-fbank (log-mel values agree to ~1e-4)
    assert torch.allclose(ours, expected[0], atol=1e-3, rtol=1e-4)


def test_fbank_equals_funasrs_kaldi_fbank(tiny_model_dir):
    from funasr.utils import fbank as kaldi

    waveform = torch.from_numpy(speech_like(1.5, seed=3)) * 32768
    expected = kaldi.fbank(waveform[None], num_mel_bins=80, frame_length=25, frame_shift=10,
                           dither=0.0, energy_floor=0.0, window_type="hamming",
                           sample_frequency=16000, snip_edges=True)
    assert torch.allclose(kaldi_fbank(waveform, frontend_config(tiny_model_dir)), expected,
                          atol=2e-3, rtol=1e-4)


def test_fingerprint_changes_with_any_setting(tiny_model_dir):
    config = frontend_config(tiny_model_dir)
    assert config.lfr_m == 7 and config.lfr_n == 6 and len(config.cmvn_shift) == 560
    changed = [dataclasses.replace(config, n_mels=64), dataclasses.replace(config, lfr_n=3),
               dataclasses.replace(config, cmvn_scale=[1.0] * 560)]
    assert len({config.fingerprint, *(c.fingerprint for c in changed)}) == 4


def test_batched_frontend_equals_funasr_per_clip(funasr_frontend, tiny_model_dir):
    """The frontend a GPU decodes with (all clips' frames in one FFT, on the decoding device):
    each clip's features equal FunASR's WavFrontend (kaldi-native-fbank) within the same 1e-3."""
    config = frontend_config(tiny_model_dir)
    clips = [speech_like(seconds, seed) for seed, seconds in enumerate((0.3, 2.37, 1.0, 7.0))]
    batched = batch_features(clips, config, device="cpu")
    for clip, ours in zip(clips, batched):
        expected, _ = funasr_frontend(torch.from_numpy(clip)[None], [clip.size])
        assert ours.shape == expected[0].shape
        assert torch.allclose(ours, expected[0], atol=1e-3, rtol=1e-4)
    short = speech_like(0.02, 9)  # shorter than a 25 ms frame: its own frame size, as Kaldi's
    expected, _ = funasr_frontend(torch.from_numpy(short)[None], [short.size])
    assert torch.allclose(batch_features([clips[0], short], config)[1], expected[0], atol=1e-3, rtol=1e-4)


def test_greedy_ids_merge_repeats_and_drop_blanks_as_ctc_does():
    generator = torch.Generator().manual_seed(0)
    log_probs = torch.randn(3, 40, 6, generator=generator).log_softmax(-1)
    log_probs[:, ::3, 0] += 5  # plenty of blanks between tokens
    lengths = torch.tensor([40, 17, 1])
    for row, length, ids in zip(log_probs, lengths, greedy_ids(log_probs, lengths)):
        best = row[:length].argmax(-1).tolist()
        merged = [t for i, t in enumerate(best) if i == 0 or t != best[i - 1]]
        assert ids == [t for t in merged if t != 0]


def test_a_batch_comes_to_the_host_in_one_copy_with_the_tags_and_ids_it_had(tiny_model_dir, monkeypatch):
    """decode_features reads each batch back in one copy (each one a sync on a GPU): count
    every way a tensor can reach the host while the tiny model decodes two batches, and check
    what came over against a direct computation."""
    from svlora.decoding import decode_features, to_host
    from svlora.model import load_base_model

    base = load_base_model(str(tiny_model_dir))
    features = [base.features(speech_like(seconds, seed)) for seed, seconds in enumerate((1.0, 2.5, 1.5))]
    reads = []
    for name in ("cpu", "item", "tolist", "numpy", "__float__", "__int__", "__bool__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _real=real, _name=name, **k:
                            reads.append(_name) or _real(self, *a, **k))
    outputs = decode_features(base, features, max_seconds_per_batch=3.0)  # 1.0+1.5 | 2.5: two batches
    monkeypatch.undo()
    assert reads.count("cpu") == 2 and set(reads) <= {"cpu", "numpy"} and reads.count("numpy") == 2, reads

    log_probs = torch.randn(2, 9, base.model.ctc.ctc_lo.out_features).log_softmax(-1)
    lengths = torch.tensor([9, 5])
    host = to_host(log_probs, lengths, base.labels)
    for kind, frame in (("language", 0), ("emotion", 1), ("event", 2)):
        vocabulary = base.labels.tags(kind)
        for row in range(2):
            expected = torch.softmax(log_probs[row, frame, list(vocabulary.values())], -1)
            assert list(host.distributions[kind][row]) == list(vocabulary)
            assert np.allclose(list(host.distributions[kind][row].values()), expected.numpy(), atol=2e-6)
    assert host.lengths == [9, 5] and (host.best == log_probs.argmax(-1).numpy()).all()
    assert [o.raw for o in outputs] == [o.raw for o in decode_features(base, features, max_seconds_per_batch=60.0)]
