"""Attention capture: wrap a UNet's attention processors and keep running sums of maps.

The names below load on first use, so planners that need only ``capture.tokens`` (token
positions of class names) do not import torch and diffusers.
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
