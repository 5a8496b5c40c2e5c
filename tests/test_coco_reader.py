"""The COCO reader on files in the real COCO 2017 layout, its use by train / eval, and merge's
file-name rules. Small hand-made files; masks are checked against pycocotools' own decoding."""

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from typer.testing import CliRunner

from synthscene.cli import app
from synthscene.codecs import mask_to_rle
from synthscene.formats.coco import CocoError, from_coco, instances_to_annotations, new_coco, read_coco
from synthscene.formats.merge import MergeError, merge_files
from synthscene.records import Instances, Sample
from synthscene.train.data import DatasetError, InstanceDataset, Source, assign_image_roots, open_sources

# COCO's gapped ids, listed out of order: classes are sorted by id
CATEGORIES = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 44, "name": "bottle"},
              {"id": 18, "name": "dog"}]
CLASS_NAMES = ["person", "dog", "bottle", "toothbrush"]


def _image(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _uncompressed_rle(mask):
    """COCO's crowd form: column-major run lengths, starting with a run of zeros."""
    counts, value, run = [], False, 0
    for pixel in mask.flatten(order="F"):
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    return {"counts": [*counts, run], "size": list(mask.shape)}


def _polygon_bbox(polygons, height, width):
    return [float(v) for v in mask_utils.toBbox(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)))]


def _annotation(annotation_id, image_id, category_id, bbox, segmentation=None, iscrowd=0):
    annotation = {"id": annotation_id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
                  "area": float(max(bbox[2], 0) * max(bbox[3], 0)), "iscrowd": iscrowd}
    if segmentation is not None:
        annotation["segmentation"] = segmentation
    return annotation


def _coco_2017(root):
    """``root/train2017/*.jpg|png`` + ``root/annotations/instances_train2017.json``: three
    non-square images; polygons, a crowd uncompressed RLE, a compressed RLE, a box-only image,
    a box-only annotation among masked ones, a clamped box and three degenerate boxes."""
    (root / "train2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images = [{"id": 7, "file_name": "000000000007.png", "height": 48, "width": 32},
              {"id": 1, "file_name": "000000000001.jpg", "height": 32, "width": 48},
              {"id": 3, "file_name": "000000000003.png", "height": 24, "width": 40}]
    for image in images:
        Image.fromarray(_image(image["height"], image["width"], image["id"])).save(root / "train2017" /
                                                                                    image["file_name"])
    crowd = np.zeros((32, 48), bool)
    crowd[20:30, 30:46] = True
    rle = np.zeros((48, 32), bool)
    rle[5:20, 3:12] = True
    rle[8:10, 20:25] = True
    poly1 = [[4, 4, 30, 6, 20, 25, 6, 20]]
    poly7 = [[14, 24, 28, 24, 28, 36], [2, 40, 10, 40, 10, 46, 2, 46]]
    annotations = [
        _annotation(10, 1, 90, _polygon_bbox(poly1, 32, 48), poly1),
        _annotation(11, 1, 1, [30.0, 20.0, 16.0, 10.0], _uncompressed_rle(crowd), iscrowd=1),
        _annotation(12, 1, 18, [5.0, 5.0, 0.0, 4.0]),  # zero width
        _annotation(13, 1, 18, [1.0, 1.0, 5.0, -3.0]),  # negative height
        _annotation(20, 7, 18, [3.0, 5.0, 22.0, 15.0], mask_to_rle(rle)),  # compressed RLE, str counts
        _annotation(21, 7, 1, _polygon_bbox(poly7, 48, 32), poly7),
        _annotation(22, 7, 1, [60.0, 10.0, 5.0, 5.0]),  # outside the 32 px wide image
        _annotation(23, 7, 18, [28.0, 40.0, 10.0, 20.0]),  # box-only among masked ones, clamped
        _annotation(30, 3, 44, [2.0, 3.0, 10.0, 8.0]),  # the image's only annotation: box-only
    ]
    path = root / "annotations" / "instances_train2017.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


@pytest.fixture
def coco(tmp_path):
    return _coco_2017(tmp_path / "coco")


def _write(data, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _quiet_coco(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_reader_decodes_like_pycocotools(coco):
    source = read_coco(coco)  # default roots: the COCO 2017 layout's train2017/
    assert source.class_names == CLASS_NAMES and source.category_ids == [1, 18, 44, 90]
    assert [i["id"] for i in source.images] == [1, 3, 7]
    assert source.dropped == {"degenerate_box": 3} and source.num_annotations == 9
    assert source.report()["crowd"] == 1 and source.report()["mask_from_box"] == 1
    reference = _quiet_coco(coco)
    class_of = {cid: k for k, cid in enumerate(source.category_ids)}
    samples = list(from_coco(coco))
    assert [s.image.shape for s in samples] == [(32, 48, 3), (24, 40, 3), (48, 32, 3)]
    assert np.array_equal(samples[2].image, _image(48, 32, 7))  # PNG: exact pixels
    seen = set()
    for sample in samples:
        instances = sample.instances
        assert sample.extra["image_id"] == source.images[sample.index]["id"] and sample.caption == ""
        for k, annotation_id in enumerate(instances.data["annotation_id"]):
            annotation = reference.anns[int(annotation_id)]
            seen.add(int(annotation_id))
            assert instances.class_id[k] == class_of[annotation["category_id"]]
            assert instances.data["iscrowd"][k] == bool(annotation["iscrowd"])
            if "segmentation" in annotation:
                assert np.array_equal(instances.masks[k], reference.annToMask(annotation).astype(bool))
                x, y, w, h = annotation["bbox"]
                assert np.allclose(instances.xyxy[k], [x, y, x + w, y + h])
    assert seen == {10, 11, 20, 21, 23, 30}  # 12, 13, 22 dropped as degenerate
    image7 = samples[2].instances
    k = list(image7.data["annotation_id"]).index(23)
    assert np.allclose(image7.xyxy[k], [28, 40, 32, 48])  # clamped to the 32 x 48 image
    assert image7.data["mask_from_box"].tolist() == [False, False, True]
    assert image7.masks[k].sum() == 4 * 8 and image7.masks[k][40:48, 28:32].all()
    assert samples[1].instances.masks is None  # box-only image
    assert samples[0].instances.masks[1].sum() == 16 * 10  # the crowd region


def test_compressed_rle_with_bytes_counts(coco):
    data = json.loads(coco.read_text())
    for annotation in data["annotations"]:
        if isinstance(annotation.get("segmentation"), dict) and isinstance(annotation["segmentation"]["counts"], str):
            annotation["segmentation"]["counts"] = annotation["segmentation"]["counts"].encode()
    source = read_coco(coco, dataset=data)
    reference = _quiet_coco(coco)
    instances = source.instances(2)
    assert np.array_equal(instances.masks[0], reference.annToMask(reference.anns[20]).astype(bool))


def test_image_roots_are_tried_in_order(coco, tmp_path):
    copy = _write(json.loads(coco.read_text()), tmp_path / "elsewhere" / "instances.json")
    with pytest.raises(CocoError, match="missing on disk"):
        read_coco(copy)  # the defaults are next to the copy
    source = read_coco(copy, [tmp_path / "empty", coco.parent.parent / "train2017"])
    assert source.paths[0] == coco.parent.parent / "train2017" / "000000000001.jpg"
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(_image(32, 48, 99)).save(other / "000000000001.jpg")  # same name, another file
    with pytest.raises(CocoError, match="ambiguous"):
        read_coco(copy, [other, coco.parent.parent / "train2017"])


@pytest.mark.parametrize("file_name", ["../secret.png", "../../etc/passwd", "/etc/passwd", "a/../../b.png"])
def test_image_paths_may_not_leave_their_root(coco, file_name):
    data = json.loads(coco.read_text())
    data["images"][0]["file_name"] = file_name
    path = _write(data, coco.parent / "instances_escape.json")
    with pytest.raises(CocoError, match="outside") as error:
        read_coco(path, [coco.parent.parent / "train2017"])
    assert str(path) in str(error.value) and file_name in str(error.value)


def test_bad_files_are_refused_with_the_file_named(coco):
    roots = [coco.parent.parent / "train2017"]
    original = json.loads(coco.read_text())

    def refused(change, match):
        data = json.loads(json.dumps(original))
        change(data)
        path = _write(data, coco.parent / "instances_bad.json")
        with pytest.raises(CocoError, match=match) as error:
            read_coco(path, roots)
        assert str(path) in str(error.value)
        assert isinstance(error.value, ValueError)
        return str(error.value)

    message = refused(lambda d: d["images"][0].update(height=47), "on disk")  # image 7 is 48 x 32
    assert "000000000007.png" in message and "48x32" in message
    refused(lambda d: d["annotations"][4]["segmentation"].update(size=[32, 48]), "mask of size")
    refused(lambda d: d["annotations"][0].update(image_id=999), "refers to image 999")
    refused(lambda d: d["annotations"][0].update(category_id=2), "category 2")
    refused(lambda d: d["images"].append(dict(d["images"][0])), "image ids repeat")
    refused(lambda d: d["images"][0].update(file_name="missing.png"), "missing on disk")
    refused(lambda d: d.pop("categories"), "not a COCO instances file")
    with pytest.raises(CocoError, match="does not exist"):
        read_coco(coco.parent / "nothing.json")


def test_round_trip_through_the_writer(tmp_path):
    rng = np.random.default_rng(0)
    samples = []
    for index, (height, width) in enumerate([(32, 48), (48, 32)]):
        masks = np.zeros((3, height, width), bool)
        for k in range(3):
            y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
            masks[k, y:y + rng.integers(2, 8), x:x + rng.integers(2, 8)] = True
            masks[k] &= rng.random((height, width)) < 0.8  # ragged edges, holes
            masks[k, y, x] = True
        instances = Instances.from_masks(masks, [0, 2, 1], score=[0.9, 0.5, 0.75])
        samples.append(Sample(index, 100 + index, f"caption {index}", _image(height, width, index), instances))
    boxes = Instances.from_boxes([[1, 2, 11, 12]], [1], score=[0.25])
    samples.append(Sample(2, 102, "box only", _image(20, 30, 2), boxes))
    root = tmp_path / "run"
    (root / "images").mkdir(parents=True)
    dataset = new_coco(["ball", "leaf", "box"], "round trip")
    for sample in samples:
        name = f"{sample.index:07d}.png"
        Image.fromarray(sample.image).save(root / "images" / name)
        dataset["images"].append({"id": sample.index + 1, "file_name": name, "height": sample.height,
                                  "width": sample.width, "caption": sample.caption, "seed": sample.seed})
        dataset["annotations"] += instances_to_annotations(sample.instances, sample.index + 1,
                                                           len(dataset["annotations"]) + 1)
    path = _write(dataset, root / "annotations" / "instances.json")
    back = list(from_coco(path))  # default roots: the export layout's images/
    assert len(back) == len(samples)
    for original, read in zip(samples, back):
        assert read.caption == original.caption and read.seed == original.seed
        assert np.array_equal(read.image, original.image)
        assert np.array_equal(read.instances.xyxy, original.instances.xyxy)
        assert np.array_equal(read.instances.class_id, original.instances.class_id)
        assert np.allclose(read.instances.score, original.instances.score)
        if original.instances.masks is None:
            assert read.instances.masks is None
        else:
            assert np.array_equal(read.instances.masks, original.instances.masks)
    assert read_coco(path).class_names == ["ball", "leaf", "box"]


def test_instance_dataset_targets_skip_crowd_and_degenerate_boxes(coco):
    dataset = InstanceDataset(coco)
    image, target = dataset[0]  # image 1: a polygon and a crowd region kept of four annotations
    assert image.shape == (3, 32, 48)
    assert target["labels"].tolist() == [4]  # toothbrush, 1-based
    assert target["masks"].shape == (1, 32, 48)
    _, target = dataset[1]  # the box-only image in a file with masks: its box as the mask
    assert target["masks"].shape == (1, 24, 40) and int(target["masks"].sum()) == 80
    report = dataset.report()
    assert report["dropped"] == {"degenerate_box": 3} and report["crowd_ignored"] == 1


def test_image_roots_on_the_command_line():
    assert assign_image_roots(1, ["a", "b"]) == [("a", "b")]
    assert assign_image_roots(2, None) == [(), ()]
    assert assign_image_roots(2, ["a:b", ""]) == [("a", "b"), ()]
    with pytest.raises(DatasetError, match="one --image-root per --data"):
        assign_image_roots(2, ["a"])


def _train(runner, out, data, *roots, model="maskrcnn_mobilenet_v3_large_fpn", steps=2):
    args = ["train", "--task", "detection", "--model", model, "--out", str(out), "--steps", str(steps),
            "--batch-size", "2", "--image-size", "32", "--checkpoint-every", "100"]
    for item in data:
        args += ["--data", str(item)]
    for root in roots:
        args += ["--image-root", str(root)]
    return runner.invoke(app, args)


def test_train_and_eval_on_a_polygon_file_with_an_image_root(coco, tmp_path):
    runner = CliRunner()
    copy = _write(json.loads(coco.read_text()), tmp_path / "elsewhere" / "polygons.json")
    images = coco.parent.parent / "train2017"
    out = tmp_path / "run"
    result = _train(runner, out, [copy], images)
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file()
    report = json.loads((out / "data.json").read_text())
    assert report[0]["dropped"] == {"degenerate_box": 3} and report[0]["crowd_ignored"] == 1
    assert json.loads((out / "config.json").read_text())["sources"][0]["image_roots"] == [str(images)]
    result = runner.invoke(app, ["eval", "--run", str(out), "--data", str(copy), "--image-root", str(images)])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output.strip().splitlines()[-1])
    assert set(scores) == {"bbox", "segm"} and all(0.0 <= scores[k]["AP"] <= 1.0 for k in scores)


def test_a_bad_source_leaves_no_run_folder(coco, tmp_path):
    runner = CliRunner()
    data = json.loads(coco.read_text())
    data["images"][1]["width"] = 47
    bad = _write(data, tmp_path / "bad.json")
    out = tmp_path / "run"
    result = _train(runner, out, [bad], coco.parent.parent / "train2017")
    assert result.exit_code == 2 and "000000000001.jpg" in result.output and "on disk" in result.output
    assert not out.exists()
    result = _train(runner, out, [coco, coco], "one-root")  # one root for two sources
    assert result.exit_code == 2 and "--image-root" in result.output and not out.exists()
    for annotation in data["annotations"]:
        annotation.pop("segmentation", None)
    data["images"][1]["width"] = 48
    box_only = _write(data, tmp_path / "boxes.json")
    result = _train(runner, out, [box_only], coco.parent.parent / "train2017")
    assert result.exit_code == 2 and "box-only" in result.output and not out.exists()


def _synthetic(root, file_name, seed):
    """A synthetic file written by the COCO writer: one 32 x 48 image in ``root/images``."""
    (root / "images").mkdir(parents=True)
    image = _image(32, 48, seed)
    Image.fromarray(image).save(root / "images" / file_name)
    masks = np.zeros((1, 32, 48), bool)
    masks[0, 4:20, 6:30] = True
    dataset = new_coco(["dog", "person"], "synthetic")
    dataset["images"].append({"id": 1, "file_name": file_name, "height": 32, "width": 48})
    dataset["annotations"] += instances_to_annotations(Instances.from_masks(masks, [0]), 1, 1)
    return _write(dataset, root / "annotations" / "instances.json"), image


def test_merge_refuses_a_shared_file_name_unless_the_folders_keep_them_apart(coco, tmp_path):
    synthetic, synthetic_image = _synthetic(tmp_path / "synth", "000000000001.jpg", 5)  # the real file's name
    runner = CliRunner()
    out = tmp_path / "merged" / "merged.json"
    result = runner.invoke(app, ["merge", "--real", str(coco), "--synthetic", str(synthetic), "--out", str(out)])
    assert result.exit_code == 2 and "'000000000001.jpg'" in result.output and not out.exists()
    real_images, synthetic_images = coco.parent.parent / "train2017", synthetic.parent.parent / "images"
    with pytest.raises(MergeError, match="000000000001.jpg"):
        merge_files(coco, synthetic, out, real_images=real_images, synthetic_images=real_images)
    assert not out.exists()
    result = runner.invoke(app, ["merge", "--real", str(coco), "--synthetic", str(synthetic), "--out", str(out),
                                 "--real-images", str(real_images), "--synthetic-images", str(synthetic_images)])
    assert result.exit_code == 0, result.output
    names = [i["file_name"] for i in json.loads(out.read_text())["images"]]
    assert names[-1] == "synth/images/000000000001.jpg" and "coco/train2017/000000000001.jpg" in names
    assert f"--image-root {tmp_path}" in result.output
    dataset = InstanceDataset(out, image_roots=[tmp_path])
    assert dataset.paths[-1] == synthetic_images / "000000000001.jpg"
    assert np.array_equal((dataset[len(dataset) - 1][0].permute(1, 2, 0) * 255).round().byte().numpy(),
                          np.array(Image.open(synthetic_images / "000000000001.jpg").convert("RGB")))
    result = _train(runner, tmp_path / "run", [out], tmp_path, steps=1)
    assert result.exit_code == 0, result.output


def test_a_merged_file_trains_with_its_two_roots_in_order(coco, tmp_path):
    synthetic, _ = _synthetic(tmp_path / "synth", "s0.png", 6)
    out = tmp_path / "merged.json"
    report = merge_files(coco, synthetic, out)  # distinct names: kept as they are
    assert report["image_root"] is None and report["synthetic_images"] == 1
    real_images, synthetic_images = coco.parent.parent / "train2017", synthetic.parent.parent / "images"
    data = open_sources("detection", [Source(str(out), image_roots=(str(real_images), str(synthetic_images)))])
    paths = data.dataset.datasets[0].paths
    assert paths[0].parent == real_images and paths[-1] == synthetic_images / "s0.png"
    result = _train(CliRunner(), tmp_path / "run", [out], real_images, synthetic_images, steps=1)
    assert result.exit_code == 0, result.output

