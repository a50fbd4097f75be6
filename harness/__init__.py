"""A continual-learning benchmark harness for language models."""

__version__ = "0.1.0"
