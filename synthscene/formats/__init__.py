"""Dataset formats: the only place that knows about xywh, 1-based ids and RLE."""
