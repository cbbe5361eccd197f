"""promptgate: a stateless proxy from HTTPS callers to a small model on Hugging Face."""

__version__ = "0.1.0"
