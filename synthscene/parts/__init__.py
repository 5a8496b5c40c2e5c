"""Object parts inferred from shape (iPOSE): annotated shapes, the part network, and the
support bank it compares new shapes with (trained by ``synthscene.train.parts``)."""

from synthscene.parts.data import PartSchema, PartShape, SupportBank, read_part_shapes
from synthscene.parts.infer import PartModel, nearest_support_parts

__all__ = ["PartModel", "PartSchema", "PartShape", "SupportBank", "nearest_support_parts", "read_part_shapes"]
