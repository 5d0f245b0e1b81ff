"""Files are read and featurised ahead while earlier ones decode (svlora.prefetch),
in order, errors in their place; and the frontend a GPU decode uses gives the CPU's features."""

import threading

import numpy as np
import torch

from svlora.decoding import segment_features
from svlora.prefetch import prefetched


def test_the_next_items_are_prepared_while_the_caller_works_on_one():
    started = {i: threading.Event() for i in range(6)}

    def prepare(item):
        started[item].set()
        if item == 2:
            raise ValueError("unreadable 2")
        return item * 10

    results = []
    for item, prepared in prefetched(prepare, list(range(6)), ahead=2):
        if item == 0:  # the caller is busy with item 0: items 1 and 2 get prepared meanwhile
            assert started[1].wait(10) and started[2].wait(10), "nothing was prepared ahead"
        results.append((item, str(prepared) if isinstance(prepared, Exception) else prepared))
    assert results == [(0, 0), (1, 10), (2, "unreadable 2"), (3, 30), (4, 40), (5, 50)]


def test_stopping_early_leaves_the_rest_unprepared():
    prepared = []
    items = prefetched(lambda item: prepared.append(item) or item, list(range(100)), ahead=3)
    assert next(items) == (0, 0)
    items.close()
    assert len(prepared) <= 5


def test_the_device_frontend_gives_the_per_segment_features(tiny_model_dir):
    from svlora.model import load_base_model

    base = load_base_model(str(tiny_model_dir))
    generator = np.random.default_rng(0)
    pieces = [(0.1 * generator.standard_normal(int(16000 * s))).astype(np.float32) for s in (0.4, 2.0, 1.3)]
    batched = segment_features(base, pieces, on_device=True)
    for ours, theirs in zip(batched, segment_features(base, pieces, on_device=False)):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-4)


def test_the_gpu_row_path_gives_row_features_and_names_an_unreadable_row(tiny_model_dir, clinic_manifests, tmp_path):
    """gpu_row_features (eval's path on a GPU: audio read a group ahead, the frontend batched),
    run here on the CPU: the per-row features within 1e-3, and an unreadable clip is the row's
    error, not a substitute."""
    import dataclasses

    import pytest

    from svlora.errors import ManifestError
    from svlora.features import GPU_FRONTEND_CLIPS, gpu_row_features, row_features
    from svlora.manifest import read_manifest
    from svlora.model import load_base_model

    base = load_base_model(str(tiny_model_dir))
    rows = read_manifest(clinic_manifests / "train.jsonl")[:GPU_FRONTEND_CLIPS + 5]  # two groups
    for ours, theirs in zip(gpu_row_features(base, rows, "gpu path"), row_features(base, rows)):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-4)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF" + b"\0" * 40)
    rows[-2] = dataclasses.replace(rows[-2], source=str(broken))
    with pytest.raises(ManifestError, match=rows[-2].key):
        gpu_row_features(base, rows, "gpu path")
