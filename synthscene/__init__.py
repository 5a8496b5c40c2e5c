"""synthscene: labelled training data for scene understanding from diffusion models."""

__version__ = "0.1.0"
