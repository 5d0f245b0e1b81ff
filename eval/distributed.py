"""`svlora eval --ray`: an arm's planned batches decoded on Ray actors (one model each: the base,
the arm's adapter, the test set's label schema), each batch exactly as the local path decodes
it (the same features, one forward pass per planned batch), so the outputs are the local ones;
scoring stays in the driver."""

from __future__ import annotations

import time


class BatchDecoder:
    """A Ray actor: the base (+ adapter) with the eval's schema; decodes planned batches."""

    def __init__(self, model: str, model_kwargs: dict, adapter: str | None, labels: dict,
                 allow_base_mismatch: bool, feature_cache: str | None):
        from svlora.adapter_format import attach_adapter
        from svlora.label_schema import LabelSchema
        from svlora.model import load_base_model, weights_sha256

        self.base = load_base_model(model, **model_kwargs, bf16_weights=True)  # as the driver's
        self.base.use_labels(LabelSchema.from_dict(labels))
        if adapter is not None:
            attach_adapter(self.base.model, adapter, weights_sha256(self.base.model_dir),
                           allow_base_mismatch, "arm", labels=self.base.labels)
        self.feature_cache = feature_cache

    def decode(self, rows: list, itn: str, options: dict) -> dict:
        from svlora.decoding import decode_features
        from svlora.features import row_features

        features = row_features(self.base, rows, "features", self.feature_cache)
        started = time.perf_counter()
        decoded = decode_features(self.base, features, float("inf"), itn=itn, **options)
        return {"seconds": round(time.perf_counter() - started, 4), "outputs": [d.to_dict() for d in decoded]}


def decode_on_ray(ray, model: str, model_kwargs: dict, adapter: str | None, labels: dict,
                  allow_base_mismatch: bool, feature_cache: str | None, batches: list[tuple[list, str]],
                  options: dict, workers: int) -> list[dict]:
    """Each (rows, itn) batch's cache entry, in order, from `workers` actors."""
    from ray.util import ActorPool

    actor = ray.remote(num_cpus=1)(BatchDecoder)
    pool = ActorPool([actor.remote(model, model_kwargs, adapter, labels, allow_base_mismatch, feature_cache)
                      for _ in range(max(1, min(workers, len(batches))))])
    return list(pool.map(lambda a, batch: a.decode.remote(batch[0], batch[1], options), batches))
