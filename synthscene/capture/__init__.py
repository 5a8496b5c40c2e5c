"""Attention capture: wrap a UNet's attention processors and keep running sums of maps."""

from synthscene.capture.processors import attention_probabilities, capture_attention, encode_for_store
from synthscene.capture.store import AttentionStore, CaptureConfig

__all__ = ["AttentionStore", "CaptureConfig", "attention_probabilities", "capture_attention", "encode_for_store"]
