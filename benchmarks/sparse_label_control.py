"""What holds the synthetic detection data back: its labels or its images?

    .venv/bin/python benchmarks/sparse_label_control.py --experiment runs/exp-sparse
        [--fraction 0.1] [--against real+synthetic] [--jobs 2]

Takes a finished ``synthscene experiment --profile sparse`` run and retrains its ``--against``
detection cells (every seed, same steps, sources and weights) with the synthetic images
labelled by the shapes world's colour oracle (``synthscene.world.oracle.oracle_instances``)
instead of by our labellers. The images are the same, so the difference between the two is
what our labels cost; what remains between the oracle-labelled cell and real only is what
the generated images themselves cost (or add). Reports box AP per setting and the paired
differences (mean and std over seeds). Models and the oracle-labelled COCO files are written
to ``EXPERIMENT/label-control``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from synthscene.experiment import percent
from synthscene.experiment_sparse import over_seeds, train_cells
from synthscene.formats.coco import default_image_roots, instances_to_annotations, load_coco_json
from synthscene.io import write_json
from synthscene.train.data import Source
from synthscene.train.downstream import DownstreamConfig
from synthscene.world.classes import CLASSES
from synthscene.world.oracle import oracle_instances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", type=Path, required=True)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--against", default="real+synthetic")
    parser.add_argument("--jobs", type=int, default=1, help="cells trained at once, each in its own process")
    args = parser.parse_args()
    models, out = args.experiment / "models", args.experiment / "label-control"
    seeds = json.loads((args.experiment / "run.json").read_text())["config"]["seeds"]
    scored = {(r["metric"], r["real_fraction"], r["setting"]): r["seeds"]
              for r in json.loads((args.experiment / "results.json").read_text())}
    cell = f"detection-{percent(args.fraction)}"

    oracle_files: dict[str, Source] = {}
    cells = []
    for seed in seeds:
        config = json.loads((models / f"{cell}-{args.against}-seed{seed}" / "config.json").read_text())
        sources = []
        for source in config["sources"]:
            if "/real-" in source["path"]:  # the experiment's real subset: data/real-<fraction>/
                sources.append(source)
                continue
            if source["path"] not in oracle_files:
                oracle_files[source["path"]] = oracle_labelled(Path(source["path"]), out)
            sources.append({**source, "path": str(oracle_files[source["path"]].path),
                            "image_roots": list(oracle_files[source["path"]].image_roots)})
        cells.append(((seed,), DownstreamConfig(**{**config, "sources": sources}),
                      out / f"{cell}-{args.against}-oracle-seed{seed}"))
    retrained = dict(train_cells(cells, args.experiment / "data" / "world", args.jobs, progress=True))

    real, ours = scored["box_ap", args.fraction, "real"], scored["box_ap", args.fraction, args.against]
    oracle = [retrained[(s,)]["box_ap"] for s in seeds]
    report = {"real": over_seeds(real), "ours": over_seeds(ours), "oracle_labels": over_seeds(oracle),
              "ours_minus_real": over_seeds(np.subtract(ours, real)),
              "oracle_minus_real": over_seeds(np.subtract(oracle, real)),
              "oracle_minus_ours": over_seeds(np.subtract(oracle, ours))}
    print(f"box AP at {args.fraction:g} real: real only {100 * np.mean(real):.1f}, {args.against} with our labels "
          f"{100 * np.mean(ours):.1f}, with the oracle's {100 * np.mean(oracle):.1f}", flush=True)
    print(json.dumps({"fraction": args.fraction, "against": args.against, "seeds": seeds, **report}))


def oracle_labelled(annotation_file: Path, out: Path) -> Source:
    """A copy of a synthetic COCO export whose annotations are the oracle's, images unchanged."""
    dataset = load_coco_json(annotation_file)
    category = {c["name"]: c["id"] for c in dataset["categories"]}
    roots = default_image_roots(annotation_file)  # where the experiment's reader found them
    annotations = []
    for image in dataset["images"]:
        file = next(root / image["file_name"] for root in roots if (root / image["file_name"]).is_file())
        instances = oracle_instances(np.asarray(Image.open(file).convert("RGB")))
        for annotation in instances_to_annotations(instances, image["id"], len(annotations) + 1):
            annotation["category_id"] = category[CLASSES[annotation["category_id"] - 1].name]
            annotations.append(annotation)
    path = out / "data" / f"{annotation_file.parent.parent.name}-oracle.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**dataset, "annotations": annotations})
    print(f"{annotation_file}: {len(dataset['images'])} images, our labels {len(dataset['annotations'])} "
          f"instances, the oracle's {len(annotations)}", flush=True)
    return Source(str(path), image_roots=tuple(str(root) for root in roots))


if __name__ == "__main__":
    main()
