"""svlora.data_prep: turn a user's clips and labels into validated SenseVoice manifests."""

from svlora.data_prep.prepare import PrepareOptions, prepare

__all__ = ["PrepareOptions", "prepare"]
