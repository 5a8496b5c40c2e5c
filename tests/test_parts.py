"""Part inference from shape (iPOSE): crops, the support bank, train-parts, the part model."""

import json

import numpy as np
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from synthscene.cli import app
from synthscene.parts import PartModel, PartSchema, SupportBank, nearest_support_parts
from synthscene.parts.data import (
    cut_instance,
    iter_part_instances,
    part_map_file,
    read_part_shapes,
    uncrop_scores,
)
from synthscene.train.parts import PartsTrainConfig, train_parts
from synthscene.world import render_scene


def _config(world, **settings):
    values = {"data": str(world), "steps": 6, "batch_size": 4, "width": 32, "layers": 1, "checkpoint_every": 3,
              "bank_per_class": 16}
    return PartsTrainConfig(**{**values, **settings})


@pytest.fixture(scope="module")
def part_run(small_world, tmp_path_factory):
    return train_parts(_config(small_world), tmp_path_factory.mktemp("parts") / "run", progress=False)


def test_a_crop_and_its_way_back_keep_an_instances_parts():
    scene = next(s for s in (render_scene(0, i) for i in range(50)) if 4 in s.class_ids)  # a star
    k = int(np.flatnonzero(scene.instances.class_id == 4)[0])
    mask = scene.instances.masks[k]
    local = np.where(mask, scene.parts - 2, 0).astype(np.uint8)  # star parts are 3, 4 in the world's list
    shape, matrix = cut_instance("star", mask, local)
    assert shape.shape.shape == (64, 64) and set(np.unique(shape.parts)) == {0, 1, 2}
    assert np.array_equal(shape.parts > 0, shape.shape)  # every shape pixel has a part, none outside
    scores = np.stack([(shape.parts == p).astype(np.float32) for p in (1, 2)])
    back = np.where(mask, uncrop_scores(scores, matrix, *mask.shape).argmax(0) + 1, 0)
    assert (back == local)[mask].mean() >= 0.9


def test_dataset_reading_finds_part_maps_and_refuses_what_is_not_one(small_world, tmp_path):
    schema, shapes = read_part_shapes(small_world, "train", progress=False)
    assert schema.classes == ("box", "star") and schema.part_names("star") == ("centre", "points")
    assert schema.global_ids("star") == (3, 4) and schema.max_parts == 2
    assert shapes and {s.class_name for s in shapes} == {"box", "star"}
    assert all(set(np.unique(s.parts)) <= {0, 1, 2} for s in shapes)
    assert part_map_file(small_world / "train" / "images" / "000001.png") == small_world / "train" / "parts" / "000001.png"
    with pytest.raises(ValueError, match="not inside an images/ folder"):
        part_map_file(tmp_path / "a.png")
    with pytest.raises(FileNotFoundError, match="not a part-annotated dataset"):
        PartSchema.read(tmp_path)
    (tmp_path / "parts.json").write_text(json.dumps({"parts": [{"class": "box", "name": "lid"}] * 2}))
    with pytest.raises(ValueError, match="listed twice"):
        PartSchema.read(tmp_path)
    (tmp_path / "parts.json").write_text(json.dumps({"parts": [{"class": "kite", "name": "tail"}]}))
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text(
        (small_world / "annotations" / "instances_train.json").read_text())
    with pytest.raises(ValueError, match="names classes the annotations do not have: kite"):
        list(iter_part_instances(tmp_path, "train", progress=False))


def test_nearest_support_copies_the_parts_of_the_most_similar_shape(small_world):
    _, shapes = read_part_shapes(small_world, "train", progress=False)
    bank = SupportBank.build(shapes)
    stars = [s for s in shapes if s.class_name == "star"]
    assert np.array_equal(nearest_support_parts(bank, stars[0]), stars[0].parts)  # itself is in the bank
    other = nearest_support_parts(bank, stars[0], exclude=0)  # with it left out: another star's parts
    assert np.array_equal(other > 0, stars[0].shape)
    with pytest.raises(ValueError, match="no support shapes for class 'hat'"):
        bank.nearest(type(stars[0])("hat", stars[0].shape), 3)


def test_train_parts_saves_a_model_that_labels_every_pixel_of_a_shape(part_run, small_world):
    model = PartModel.load(part_run)
    assert model.schema.classes == ("box", "star") and model.supports == 3
    assert set(model.bank.shapes) == {"box", "star"} and len(model.bank.shapes["star"]) <= 16
    scene = next(s for s in (render_scene(3, 10_000_000 + i) for i in range(50)) if 2 in s.class_ids)  # a box
    mask = scene.instances.masks[int(np.flatnonzero(scene.instances.class_id == 2)[0])]
    parts = model.predict("box", mask)
    assert parts.shape == mask.shape and (parts[mask] > 0).all() and not parts[~mask].any()
    assert set(np.unique(parts[mask])) <= {1, 2}
    info = json.loads((part_run / "parts.json").read_text())
    assert info["parts"][0] == {"class": "box", "name": "face"}
    assert [json.loads(line)["step"] for line in (part_run / "train_log.jsonl").read_text().splitlines()] == list(range(6))


def test_a_resumed_run_ends_with_the_same_weights(part_run, small_world, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(part_run, copy)
    (copy / "checkpoints" / "step-0000006.pt").unlink()  # as if killed after step 3's checkpoint
    (copy / "parts.safetensors").unlink()
    train_parts(_config(small_world), copy, resume=True, progress=False)
    first, again = load_file(part_run / "parts.safetensors"), load_file(copy / "parts.safetensors")
    assert all(np.array_equal(first[k].numpy(), again[k].numpy()) for k in first)
    assert (copy / "train_log.jsonl").read_text() == (part_run / "train_log.jsonl").read_text()
    with pytest.raises(ValueError, match="other settings"):
        train_parts(_config(small_world, steps=7), copy, resume=True, progress=False)


def test_the_cli_refuses_bad_input_in_one_line_and_writes_nothing(small_world, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["train-parts", "--out", str(tmp_path / "a"), "--data", str(tmp_path / "none")])
    assert result.exit_code == 2 and "not a part-annotated dataset" in result.output
    assert not (tmp_path / "a").exists()
    result = runner.invoke(app, ["train-parts", "--out", str(tmp_path / "b"), "--data", str(small_world),
                                 "--supports", "500"])
    assert result.exit_code == 2 and "too few of box, star" in result.output
    assert not (tmp_path / "b").exists()
    result = runner.invoke(app, ["train-parts", "--out", str(tmp_path / "c"), "--data", str(small_world),
                                 "--steps", "0"])
    assert result.exit_code == 2 and "steps" in result.output and not (tmp_path / "c").exists()


def test_the_shipped_part_model_reads_parts_from_shape():
    from synthscene.methods.layout import part_model_folder
    from synthscene.world import CLASSES, PARTS

    model = PartModel.load(part_model_folder("embedded"))
    right = total = 0
    for index in range(60):
        scene = render_scene(11, index)
        for mask, class_id in zip(scene.instances.masks, scene.instances.class_id):
            name = CLASSES[class_id].name
            if name not in model.schema.classes:
                continue
            first = 1 + [p.class_id for p in PARTS].index(int(class_id))  # the class's first part id
            truth = np.where(mask, scene.parts - first + 1, 0)
            predicted = model.predict(name, mask)
            right += int((predicted == truth)[mask].sum())
            total += int(mask.sum())
    assert total > 500 and right / total >= 0.9
