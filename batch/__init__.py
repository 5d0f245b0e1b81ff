"""`svlora batch`: transcription of archives on Ray Data (local or a cluster), in deterministic
shards written atomically, so that a rerun after a crash skips finished shards and no record is
ever written twice."""

from svlora.batch.inputs import list_inputs
from svlora.batch.job import BatchOptions, run_batch

__all__ = ["BatchOptions", "list_inputs", "run_batch"]
