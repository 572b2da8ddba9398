"""llmscale: how language-model loss scales with model size, data and compute, and what it costs."""

__version__ = "0.1.0"

__all__ = ["__version__"]
