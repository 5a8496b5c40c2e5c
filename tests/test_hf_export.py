"""The Hugging Face export: parquet shards and a card that ``datasets`` itself loads back
to the run's exact pixels, masks and boxes (real datasets, pyarrow and pycocotools)."""

import json
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from pycocotools import mask as mask_utils

from synthscene.formats.hf import hf_features, write_hf
from synthscene.records import Instances, Sample
from synthscene.store import open_run, write_shard

datasets = pytest.importorskip("datasets", reason="the hf export needs datasets (pip install 'synthscene[hf]')")


def export(run_root, out, **kwargs):
    out.mkdir()  # the caller (atomic_output_dir) hands the writer an empty folder
    write_hf(open_run(run_root), out, **kwargs)
    return out


def load_files(out, cache):
    return datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train",
                                 cache_dir=str(cache))


def load_folder(out, cache):
    return datasets.load_dataset(str(out), split="train", cache_dir=str(cache))


def card_header(out):
    text = (out / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def arrow_rows(ds):
    """Rows as stored (images as bytes, not decoded), for comparing two loads."""
    return ds.with_format("arrow")[:].to_pylist()


def xyxy_of(bbox):
    x, y, w, h = np.asarray(bbox, np.float32).reshape(-1, 4).T
    return np.stack([x, y, x + w, y + h], axis=1)


def hand_run(root, class_names, samples, name="hand"):
    """A run folder written directly: a resolved spec and one shard of ``samples``."""
    root.mkdir()
    spec = {"name": name, "num_samples": len(samples), "shard_size": len(samples),
            "classes": [{"name": n} for n in class_names]}
    (root / "spec.resolved.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    write_shard(root, 0, samples)
    return root


def image(index):
    return np.random.default_rng(index).integers(0, 256, (6, 8, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_hf(tiny_run, tmp_path_factory):
    """tiny_run (6 samples) exported 4 samples a file, and loaded from the files."""
    out = export(tiny_run, tmp_path_factory.mktemp("hf") / "out", samples_per_file=4)
    # what export_run writes beside the writer's files: loading the folder must ignore it
    (out / "export.json").write_text(json.dumps({"run": str(tiny_run), "format": "hf"}))
    return out, load_files(out, tmp_path_factory.mktemp("hf_cache"))


def test_the_files_load_to_the_runs_pixels_masks_and_boxes(tiny_run, tiny_hf):
    out, ds = tiny_hf
    run = open_run(tiny_run)
    items = list(run.items())
    assert ds.num_rows == len(items) == 6
    assert ds.features == hf_features(run.class_names)
    assert isinstance(ds.features["image"], datasets.Image) and isinstance(ds.features["semantic"], datasets.Image)
    category = ds.features["objects"]["category"].feature
    assert isinstance(category, datasets.ClassLabel) and category.names == ["ball", "leaf", "box"]
    assert sum(len(s.instances) for s, _ in items) > 0, "the tiny run should have instances"

    for row, (sample, _) in zip(ds, items):
        assert (row["index"], row["seed"], row["caption"]) == (sample.index, sample.seed, sample.caption)
        assert (row["width"], row["height"]) == (sample.width, sample.height)
        assert np.array_equal(np.array(row["image"]), sample.image)
        assert row["semantic"].mode == "P"  # class indices, not colours
        assert np.array_equal(np.array(row["semantic"]), sample.semantic)
        objects, inst = row["objects"], sample.instances
        assert objects["category"] == inst.class_id.tolist()
        assert objects["area"] == inst.area.tolist()
        assert objects["score"] == pytest.approx(inst.score.tolist())
        assert np.array_equal(xyxy_of(objects["bbox"]), inst.xyxy)
        assert len(objects["segmentation"]) == len(inst)
        for rle, mask in zip(objects["segmentation"], inst.masks):
            assert rle["size"] == [sample.height, sample.width]
            decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            assert np.array_equal(decoded.astype(bool), mask)

    # the stored PNGs travel byte for byte, not re-encoded
    raw = ds.cast_column("image", datasets.Image(decode=False)).cast_column("semantic", datasets.Image(decode=False))
    for row, (_, files) in zip(raw, items):
        assert row["image"]["bytes"] == files.image.read_bytes()
        assert row["semantic"]["bytes"] == files.semantic.read_bytes()


def test_the_folder_loads_by_its_card(tiny_hf, tmp_path):
    out, from_files = tiny_hf
    from_folder = load_folder(out, tmp_path / "cache")
    assert from_folder.features == from_files.features
    assert arrow_rows(from_folder) == arrow_rows(from_files)

    header, body = card_header(out)
    assert header["configs"] == [{"config_name": "default",
                                  "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}]
    assert header["tags"] == ["synthetic", "synthscene"]
    assert header["task_categories"] == ["object-detection", "image-segmentation"]
    assert header["size_categories"] == ["n<1K"]
    assert header["pretty_name"] == "tiny"
    names = [f for f in header["dataset_info"]["features"] if f["name"] == "objects"][0]
    category = [f for f in names["struct"] if f["name"] == "category"][0]
    assert category["list"]["class_label"]["names"] == {"0": "ball", "1": "leaf", "2": "box"}
    instances = sum(len(objects["category"]) for objects in from_files["objects"])
    assert "6 samples" in body and f"{instances} instances" in body and "pycocotools" in body


def test_files_of_samples_per_file_rows_in_index_order(tiny_hf):
    out, ds = tiny_hf
    files = sorted((out / "data").iterdir())
    assert [f.name for f in files] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert [pq.read_metadata(f).num_rows for f in files] == [4, 2]
    assert ds["index"] == list(range(6))


def test_a_box_only_run_stays_typed(tmp_path):
    samples = [
        Sample(0, 10, "two boxes", image(0), Instances.from_boxes([[0, 0, 3, 2], [2, 2, 8, 6]], [1, 0], [0.5, 0.9])),
        Sample(1, 11, "nothing", image(1), Instances.empty()),
        Sample(2, 12, "one box", image(2), Instances.from_boxes([[1.5, 0.5, 4, 5]], [1])),
    ]
    out = export(hand_run(tmp_path / "run", ["ball", "leaf"], samples), tmp_path / "out")
    files = sorted((out / "data").iterdir())
    assert [f.name for f in files] == ["train-00000-of-00001.parquet"]
    # every column has its real type even though no value of segmentation / semantic is set
    objects_type = pq.read_schema(files[0]).field("objects").type
    assert str(objects_type.field("segmentation").type) == \
        "list<element: struct<size: fixed_size_list<element: int32>[2], counts: string>>"

    ds = load_folder(out, tmp_path / "cache")
    assert ds.features == hf_features(["ball", "leaf"])
    assert ds["semantic"] == [None, None, None]
    for row, sample in zip(ds, samples):
        objects, inst = row["objects"], sample.instances
        assert objects["segmentation"] == [None] * len(inst)  # null: this instance has no mask
        assert objects["category"] == inst.class_id.tolist()
        assert objects["area"] == inst.area.tolist()
        assert objects["score"] == pytest.approx(inst.score.tolist())
        assert np.array_equal(xyxy_of(objects["bbox"]), inst.xyxy)
        assert np.array_equal(np.array(row["image"]), sample.image)
    assert ds[0]["objects"]["bbox"] == [[0, 0, 3, 2], [2, 2, 6, 4]]
    assert ds[1]["objects"] == {"bbox": [], "category": [], "area": [], "score": [], "segmentation": [], "attributes": []}


def test_user_strings_survive_into_labels_and_cannot_break_the_card(tmp_path):
    odd, name = 'a: "b" <x>', "run: [x] <script>alert(1)</script>\n# heading"
    caption = 'a "quoted" caption: <b>bold</b>\n---\nnot: yaml'
    masks = np.zeros((1, 6, 8), bool)
    masks[0, 1:4, 2:6] = True
    semantic = np.where(masks[0], 1, 0).astype(np.uint8)
    semantic[0, 0] = 255
    sample = Sample(0, 1, caption, image(0), Instances.from_masks(masks, [0]), semantic)
    out = export(hand_run(tmp_path / "run", [odd, "plain"], [sample], name=name), tmp_path / "out")

    header, body = card_header(out)
    assert header["pretty_name"] == name
    ds = load_folder(out, tmp_path / "cache")
    assert ds.features["objects"]["category"].feature.names == [odd, "plain"]
    row = ds[0]
    assert row["caption"] == caption
    assert np.array_equal(np.array(row["semantic"]), semantic)  # 255 = ignore kept
    # the body shows the names, with nothing a markdown renderer would turn into a tag or heading
    assert "<x>" not in body and "<script>" not in body and "\n# heading" not in body
    assert "&lt;x&gt;" in body and "&lt;script&gt;" in body


def test_a_clear_error_without_datasets(tmp_path, monkeypatch):
    run = hand_run(tmp_path / "run", ["ball", "leaf"], [Sample(0, 0, "a ball", image(0), Instances.empty())])
    monkeypatch.setitem(sys.modules, "datasets", None)  # "import datasets" now raises ImportError
    with pytest.raises(ValueError, match=r"^--format hf needs the 'datasets' package: pip install"):
        export(run, tmp_path / "out")


def test_the_card_does_not_show_where_a_local_model_lives(tmp_path):
    from synthscene.formats.hf import public_model_name

    folder = tmp_path / "home" / "me" / "my-model"
    folder.mkdir(parents=True)
    assert public_model_name(str(folder)) == "local folder my-model"
    assert public_model_name("embedded") == "embedded"
    assert public_model_name("stabilityai/stable-diffusion-2-1") == "stabilityai/stable-diffusion-2-1"
