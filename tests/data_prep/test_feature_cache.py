import dataclasses

import torch

from svlora.audio import load_audio
from svlora.data_prep import PrepareOptions, prepare_corpus
from svlora.feature_cache import FeatureCache
from svlora.features import row_features
from svlora.frontend import compute_features, frontend_config
from svlora.io import sha256_file
from svlora.manifest import read_manifest
from svlora.model import load_base_model
from tests.data_prep.test_prepare import good_rows, write_csv


def test_prepare_features_equal_the_frontend_and_training_reads_them(tmp_path, tiny_model_dir):
    table = write_csv(tmp_path / "labels.csv", good_rows(tmp_path, speakers=10))
    prepare_corpus(PrepareOptions(input=str(table), out=str(tmp_path / "m"), format="csv", language="en",
                                  val=0.2, test=0.2, features_model=str(tiny_model_dir), workers=2))
    config = frontend_config(tiny_model_dir)
    cache = FeatureCache(tmp_path / "m/features", config)
    rows = read_manifest(tmp_path / "m/train.jsonl")
    for row in rows:
        cached = cache.load(sha256_file(row.source))
        assert cached is not None
        assert torch.equal(cached, compute_features(load_audio(row.source), config))
    # row_features serves the cache: a poisoned entry proves it is read, not recomputed
    digest = sha256_file(rows[0].source)
    cache.store(digest, torch.zeros(3, 560))
    base = load_base_model(str(tiny_model_dir))
    served = row_features(base, rows[:2], cache_dir=str(tmp_path / "m/features"))
    assert torch.equal(served[0], torch.zeros(3, 560))
    assert torch.equal(served[1], base.features(load_audio(rows[1].source)))


def test_a_changed_frontend_does_not_read_old_features(tmp_path, tiny_model_dir):
    config = frontend_config(tiny_model_dir)
    FeatureCache(tmp_path, config).store("ab" * 32, torch.ones(2, 560))
    assert FeatureCache(tmp_path, config).load("ab" * 32) is not None
    changed = dataclasses.replace(config, lfr_n=3)
    assert FeatureCache(tmp_path, changed).load("ab" * 32) is None
    rescaled = dataclasses.replace(config, cmvn_scale=[2.0] * 560)
    assert FeatureCache(tmp_path, rescaled).load("ab" * 32) is None
