import dataclasses

import numpy as np
import pytest
import torch
import yaml

from svlora.frontend import compute_features, frontend_config, kaldi_fbank
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
