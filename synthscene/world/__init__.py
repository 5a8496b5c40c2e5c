"""The shapes world: procedural scenes with exact labels, and an oracle for any image of it."""

from synthscene.world.classes import CLASS_NAMES, CLASSES, PART_NAMES, PARTS
from synthscene.world.oracle import oracle_parts, oracle_semantic, present_classes
from synthscene.world.render import render_scene, scene_seed

__all__ = ["CLASSES", "CLASS_NAMES", "PARTS", "PART_NAMES", "oracle_parts", "oracle_semantic", "present_classes", "render_scene", "scene_seed"]
