"""svlora: adapt SenseVoiceSmall to a domain with LoRA — prepare, train, evaluate, export."""

__version__ = "0.1.0"
