"""Infer the parts of instances that have none: a trained part model, or the plain
baseline of copying the most similar support's parts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from synthscene.io import write_bytes, write_json
from synthscene.parts.data import PartSchema, PartShape, SupportBank, cut_instance, fill_parts, uncrop_scores
from synthscene.parts.net import PartNet, PartNetConfig, mask_missing_parts

WEIGHTS_FILE, INFO_FILE, SUPPORTS_FILE = "parts.safetensors", "parts.json", "supports.npz"


class PartModel:
    """A ``train-parts`` output folder, loaded: the network, the part list, the supports."""

    def __init__(self, net: PartNet, schema: PartSchema, bank: SupportBank, supports: int):
        self.net = net.eval()
        self.schema = schema
        self.bank = bank
        self.supports = supports

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> PartModel:
        from safetensors.torch import load_file

        folder = Path(folder)
        missing = [n for n in (WEIGHTS_FILE, INFO_FILE, SUPPORTS_FILE) if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a part model (a train-parts output): {', '.join(missing)} missing")
        info = json.loads((folder / INFO_FILE).read_text())
        net = PartNet(PartNetConfig.model_validate(info["net"]))
        net.load_state_dict(load_file(folder / WEIGHTS_FILE))
        with np.load(folder / SUPPORTS_FILE, allow_pickle=False) as arrays:
            classes = info["support_classes"]
            bank = SupportBank({c: arrays[f"shapes_{k}"] for k, c in enumerate(classes)},
                               {c: arrays[f"parts_{k}"] for k, c in enumerate(classes)})
        return cls(net.to(device), PartSchema.from_json(info["parts"]), bank, int(info["supports"]))

    @property
    def device(self):
        return next(self.net.parameters()).device

    @torch.no_grad()
    def predict_crops(self, queries: list[PartShape], exclude: list[int | None] | None = None) -> np.ndarray:
        """float32 [N, max_parts, CROP, CROP]: part scores of cropped shapes, each compared
        with the ``k`` most similar shapes of its class in the bank (``exclude``: a bank index
        per query not to use, e.g. the query itself)."""
        exclude = exclude or [None] * len(queries)
        chosen = [self.bank.nearest(q, self.supports, x) for q, x in zip(queries, exclude)]
        device = self.device
        query = torch.from_numpy(np.stack([q.shape for q in queries])).to(device)
        shapes = torch.from_numpy(np.stack([self.bank.shapes[q.class_name][c] for q, c in zip(queries, chosen)]))
        parts = torch.from_numpy(np.stack([self.bank.parts[q.class_name][c] for q, c in zip(queries, chosen)]))
        counts = torch.tensor([len(self.schema.part_names(q.class_name)) for q in queries], device=device)
        scores = self.net(query, shapes.to(device), parts.to(device).long())
        return mask_missing_parts(scores, counts).float().cpu().numpy()

    def predict(self, class_name: str, mask: np.ndarray) -> np.ndarray:
        """uint8 [H, W]: the inferred parts of one instance, 0 outside ``mask``, 1..n its
        class's parts (``schema.part_names(class_name)``)."""
        shape, matrix = cut_instance(class_name, mask)
        scores = uncrop_scores(self.predict_crops([shape])[0], matrix, *mask.shape)
        return np.where(mask, scores.argmax(0) + 1, 0).astype(np.uint8)


def nearest_support_parts(bank: SupportBank, query: PartShape, exclude: int | None = None) -> np.ndarray:
    """The baseline: the parts of the bank's shape most like ``query``, on the query's shape
    (every query pixel the support's shape misses takes its nearest support part)."""
    best = bank.nearest(query, 1, exclude)[0]
    parts = fill_parts(bank.parts[query.class_name][best], query.shape)
    return np.where(query.shape, parts, 0).astype(np.uint8)


def save_part_model(out: Path, net: PartNet, schema, bank: SupportBank, supports: int) -> None:
    """Write a part model folder: weights, settings and part list, support bank."""
    import io

    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out / WEIGHTS_FILE)
    arrays = {}  # keyed by position in "support_classes": a class name is no file name
    for k, name in enumerate(bank.shapes):
        arrays[f"shapes_{k}"] = bank.shapes[name]
        arrays[f"parts_{k}"] = bank.parts[name]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes(out / SUPPORTS_FILE, buffer.getvalue())
    write_json(out / INFO_FILE, {"net": net.config.model_dump(mode="json"), "parts": schema.to_json(),
                                 "supports": supports, "support_classes": list(bank.shapes)}, indent=2)
