"""The shapes world: procedural scenes with exact labels, and an oracle for any image of it."""

from synthscene.world.classes import CLASS_NAMES, CLASSES
from synthscene.world.oracle import oracle_semantic, present_classes
from synthscene.world.render import render_scene, scene_seed

__all__ = ["CLASSES", "CLASS_NAMES", "oracle_semantic", "present_classes", "render_scene", "scene_seed"]
