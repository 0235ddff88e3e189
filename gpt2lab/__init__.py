"""gpt2lab: reproduce GPT-2 (124M) pretraining step by step, and time every optimization."""

__version__ = "0.1.0"
