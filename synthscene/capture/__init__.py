"""Attention capture: wrap a denoiser's attention processors (UNet, SD3 or FLUX transformer)
and keep running sums of maps.

The names below load on first use, so importing the package does not import torch and
diffusers (token positions of class names are in ``synthscene.models.tokens``).
"""

import importlib

_EXPORTS = {
    "attention_probabilities": "synthscene.capture.processors",
    "capture_attention": "synthscene.capture.processors",
    "encode_for_store": "synthscene.capture.processors",
    "AttentionStore": "synthscene.capture.store",
    "CaptureConfig": "synthscene.capture.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
