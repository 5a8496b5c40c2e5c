"""Open the real dataset a spec names (``spec.SourceSpec``) as samples read one by one."""

from __future__ import annotations


def open_source(source):
    """A ``CocoSource`` (COCO, or YOLO read into one) or ``CityscapesSource``: ``len()``,
    ``class_names``, ``instances(i)`` (labels only) and ``sample(i)`` (with the image)."""
    if source.format == "coco":
        from synthscene.formats.coco import read_coco

        return read_coco(source.path, None if source.image_root is None else [source.image_root])
    if source.format == "yolo":
        from synthscene.formats.yolo import read_yolo

        return read_yolo(source.path, source.split)
    from synthscene.formats.cityscapes import CityscapesSource

    return CityscapesSource(source.path, source.split)
