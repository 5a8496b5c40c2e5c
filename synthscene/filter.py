"""Keep the instances and samples of a run that pass conditions on their scores: a view.

``synthscene filter --in RUN --out VIEW --where "score >= 0.5 and class_margin > 0.1"``
keeps the instances that satisfy ``--where`` and then the samples that satisfy
``--samples-where`` (e.g. ``"count >= 1"``). Conditions are Python-like expressions over
fields, combined with ``and`` / ``or`` / ``not`` and parentheses, compared with
``< <= > >= == !=`` and ``in`` / ``not in`` a tuple:

- instance fields: ``category`` (the class name), ``score``, ``area`` (pixels), and every
  per-instance score the labeller stored (``synthscene.records.Instances.data``, e.g.
  ``attention_agreement``, ``matte_confidence``, ``class_margin``, ``class_gain``,
  ``context_margin``);
- sample fields: ``count`` (instances kept), ``removed`` (instances the filter removed),
  ``uncertain`` (fraction of 255 pixels in the semantic mask), ``index``, ``seed``.

A score its check did not compute (NaN) satisfies no comparison. Expressions are parsed
with ``ast`` and only these forms are evaluated: nothing in them is executed.

The view is a run folder (``open_run`` reads it like any other; export, gallery, merge and
train take it): the source's spec, manifest and provenance, ``view.json`` naming the
source and the conditions, and one shard per source shard holding the kept records. The
images stay in the source run (``--copy-images`` copies them); semantic masks are written
anew, since the pixels of a removed instance become 255 (its label is not trusted, so it
is neither the class nor background).
"""

from __future__ import annotations

import ast
import json
import operator
import shutil
from pathlib import Path

import numpy as np

from synthscene.codecs import IGNORE_INDEX, save_semantic_png
from synthscene.io import atomic_output_dir, write_json
from synthscene.store import RECORDS, SHARDS, VIEW, Run, open_run, to_record

SAMPLE_FIELDS = ("count", "removed", "uncertain", "index", "seed")
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: operator.eq, ast.NotEq: operator.ne}


class FilterError(ValueError):
    """A condition cannot be parsed or names a field that does not exist."""


class Condition:
    """A parsed ``--where`` expression, evaluated on arrays of fields (one value per item)."""

    def __init__(self, text: str, fields: list[str], kind: str):
        self.text, self.fields = text, sorted(fields)
        try:
            self.tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as err:
            raise FilterError(f"{kind} condition {text!r} is not an expression ({err.msg})") from None
        self._check(self.tree, kind)

    def _check(self, node, kind: str) -> None:
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self._check(value, kind)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self._check(node.operand, kind)
        elif isinstance(node, ast.Compare):
            for part in (node.left, *node.comparators):
                if isinstance(part, ast.Name) and part.id not in self.fields:
                    raise FilterError(f"{kind} condition {self.text!r} names an unknown field {part.id!r}; the "
                                      f"fields are: {', '.join(self.fields)}")
                if not isinstance(part, (ast.Name, ast.Constant, ast.Tuple, ast.List, ast.UnaryOp)):
                    raise FilterError(f"{kind} condition {self.text!r}: {ast.unparse(part)!r} is neither a field "
                                      "nor a value")
                if isinstance(part, (ast.Tuple, ast.List, ast.UnaryOp)):
                    _constant(part, self.text)
            for op in node.ops:
                if type(op) not in _COMPARE and not isinstance(op, (ast.In, ast.NotIn)):
                    raise FilterError(f"{kind} condition {self.text!r}: unsupported comparison {type(op).__name__}")
        else:
            raise FilterError(f"{kind} condition {self.text!r}: {ast.unparse(node)!r} is not a comparison (write "
                              "e.g. 'score >= 0.5 and category in (\"ball\", \"hat\")')")

    def __call__(self, values: dict[str, np.ndarray], n: int) -> np.ndarray:
        """bool [n]: which items satisfy the condition."""
        return np.broadcast_to(self._eval(self.tree, values), (n,)).copy()

    def _eval(self, node, values):
        if isinstance(node, ast.BoolOp):
            parts = [self._eval(v, values) for v in node.values]
            return np.logical_and.reduce(parts) if isinstance(node.op, ast.And) else np.logical_or.reduce(parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ~self._eval(node.operand, values)
        result, left = True, self._operand(node.left, values)
        for op, right_node in zip(node.ops, node.comparators):
            right = self._operand(right_node, values)
            if isinstance(op, (ast.In, ast.NotIn)):
                inside = np.isin(left, np.asarray(right if isinstance(right, tuple) else (right,)))
                outcome = inside if isinstance(op, ast.In) else ~inside
            else:
                with np.errstate(invalid="ignore"):
                    outcome = _COMPARE[type(op)](left, right)
            result, left = np.logical_and(result, outcome), right
        return result

    def _operand(self, node, values):
        if isinstance(node, ast.Name):
            return values[node.id]
        return _constant(node, self.text)


def _constant(node, text: str):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return -node.operand.value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_constant(e, text) for e in node.elts)
    raise FilterError(f"condition {text!r}: {ast.unparse(node)!r} is not a number, a string or a tuple of them")


def instance_fields(run: Run) -> list[str]:
    """The fields an instance condition may name in this run: ``category``, ``score``,
    ``area`` and every stored per-instance score."""
    names = {"category", "score", "area"}
    for _, record in run.records():
        for item in record["instances"]:
            names |= set(item.get("data", {}))
    return sorted(names)


def filter_run(run: str | Path, out: str | Path, where: str | None = None, samples_where: str | None = None,
               copy_images: bool = False, overwrite: bool = False, progress: bool = False) -> dict:
    """Write the view of ``run`` that keeps what passes ``where`` / ``samples_where`` to
    ``out`` (all or nothing). Returns the counts it also records in ``view.json``."""
    source = open_run(run)
    source.completeness()
    fields = instance_fields(source)
    keep_instance = Condition(where, fields, "instance") if where else None
    keep_sample = Condition(samples_where, list(SAMPLE_FIELDS), "sample") if samples_where else None
    origin = source.view["source"] if source.view and not source.view.get("images_copied") else str(source.root)
    counts = {"samples": 0, "samples_kept": 0, "instances": 0, "instances_kept": 0}
    names = np.array(source.class_names)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        for name in ("spec.resolved.yaml", "manifest.jsonl"):
            shutil.copyfile(source.root / name, tmp / name)
        shards = source.shard_folders()
        for shard in _bar(shards, progress):
            folder = tmp / SHARDS / shard.name
            (folder / "semantic").mkdir(parents=True)
            if copy_images:
                (folder / "images").mkdir()
            lines = []
            for sample, files in source.shard_items(shard):
                inst = sample.instances
                values = {"category": names[inst.class_id], "score": inst.score, "area": inst.area,
                          **{k: v for k, v in inst.data.items() if np.asarray(v).ndim == 1}}
                for field in fields:  # a field another sample has: NaN here, so no comparison holds
                    values.setdefault(field, np.full(len(inst), np.nan, np.float32))
                keep = keep_instance(values, len(inst)) if keep_instance else np.ones(len(inst), bool)
                semantic = sample.semantic
                if semantic is not None and not keep.all():
                    semantic = semantic.copy()
                    semantic[inst.masks[~keep].any(axis=0)] = IGNORE_INDEX
                sample_values = {"count": keep.sum(), "removed": (~keep).sum(), "index": sample.index,
                                 "seed": sample.seed,
                                 "uncertain": 0.0 if semantic is None else float((semantic == IGNORE_INDEX).mean())}
                counts["samples"] += 1
                counts["instances"] += len(inst)
                if keep_sample is not None and not keep_sample(sample_values, 1)[0]:
                    continue
                counts["samples_kept"] += 1
                counts["instances_kept"] += int(keep.sum())
                sample.instances = inst[keep]
                sample.semantic = semantic
                image = files.image.relative_to(files.image.parents[1]).as_posix()
                if copy_images:
                    shutil.copyfile(files.image, folder / image)
                semantic_file = parts_file = None
                if semantic is not None:
                    semantic_file = f"semantic/{sample.index:07d}.png"
                    save_semantic_png(semantic, folder / semantic_file)
                if sample.parts is not None:  # the parts of removed instances go with them
                    parts = sample.parts if keep.all() else np.where(inst.masks[~keep].any(axis=0), 0, sample.parts)
                    parts_file = f"parts/{sample.index:07d}.png"
                    (folder / "parts").mkdir(exist_ok=True)
                    save_semantic_png(parts.astype(np.uint8), folder / parts_file)
                lines.append(json.dumps(to_record(sample, image, semantic_file, parts_file), sort_keys=True))
            (folder / RECORDS).write_text("".join(line + "\n" for line in lines))
        view = {"source": str(Path(origin).resolve()) if not copy_images else None, "images_copied": copy_images,
                "filtered": str(source.root.resolve()), "where": where, "samples_where": samples_where,
                "shards": len(shards), **counts}
        write_json(tmp / VIEW, view, indent=2)
        write_json(tmp / "run.json", {**source.provenance, "filter": view}, indent=2)
        from synthscene.report.card import write_dataset_card

        write_dataset_card(tmp)
    return view


def _bar(items, progress: bool):
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="filter", unit="shard")
