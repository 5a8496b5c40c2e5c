"""Per-sample seeds: a sample's randomness depends only on (run seed, sample index),
never on batch size, worker count or which samples ran before it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def sample_seed(run_seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of a run seeded with ``run_seed``."""
    if run_seed < 0 or index < 0:
        raise ValueError(f"seeds and indices must be >= 0, got run_seed={run_seed}, index={index}")
    state = np.random.SeedSequence([run_seed, index]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def sample_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@dataclass(frozen=True)
class SampleTask:
    """One row of a run's manifest: everything needed to make sample ``index`` alone."""

    index: int
    seed: int
    prompt: str
    class_ids: tuple[int, ...]  # 0-based into the spec's classes, in prompt order
    words: tuple[str, ...]  # the word of each class as it appears in the prompt
    region_prompts: tuple[str, ...] = ()  # mosaic: one prompt per region (class_ids, words per region)

    def to_json(self) -> dict:
        row = {"index": self.index, "seed": self.seed, "prompt": self.prompt, "class_ids": list(self.class_ids),
               "words": list(self.words)}
        if self.region_prompts:
            row["region_prompts"] = list(self.region_prompts)
        return row

    @classmethod
    def from_json(cls, row: dict) -> SampleTask:
        return cls(row["index"], row["seed"], row["prompt"], tuple(row["class_ids"]), tuple(row["words"]),
                   tuple(row.get("region_prompts", ())))


def plan_dataset(spec) -> list[SampleTask]:
    """The manifest of a text -> labels run: a prompt naming 1..k classes per sample.

    Each task's choices come from its own seed, so the manifest of the first N samples
    does not change when ``num_samples`` grows.
    """
    tasks = []
    low, high = spec.objects_per_prompt
    for index in range(spec.num_samples):
        seed = sample_seed(spec.seed, index)
        rng = np.random.default_rng(seed)
        count = int(rng.integers(low, high + 1))
        class_ids = tuple(int(c) for c in rng.choice(len(spec.classes), size=count, replace=False))
        words = []
        for class_id in class_ids:
            cls = spec.classes[class_id]
            words.append(str(rng.choice([cls.name, *cls.synonyms])))
        if count == 1 and spec.classes[class_ids[0]].prompts:
            prompt = str(rng.choice(spec.classes[class_ids[0]].prompts)).format(name=words[0])
        else:
            template = str(rng.choice(spec.prompt_templates))
            prompt = template.format(objects=_list_objects(words))
        tasks.append(SampleTask(index, seed, prompt, class_ids, tuple(words)))
    return tasks


def _list_objects(words: list[str]) -> str:
    phrases = [("an " if w[0].lower() in "aeiou" else "a ") + w for w in words]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
