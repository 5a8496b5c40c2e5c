"""Layouts and the ControlNet that draws them: control images, captions, dataset layouts,
train-controlnet on a tiny random pipeline (saved, reloaded offline, resumed)."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from synthscene.cli import app
from synthscene.codecs import load_semantic_png
from synthscene.layout.data import open_layouts
from synthscene.layout.maps import Layout, control_image, count_caption, instance_boundaries
from synthscene.records import Instances
from synthscene.train.controlnet import ControlNetTrainConfig, check_controlnet, fit_to, train_controlnet


def _two_touching_boxes() -> Layout:
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 2:6, 1:4] = True
    masks[1, 2:6, 4:7] = True  # touches the first: same class, another instance
    parts = np.zeros((8, 8), np.uint8)
    parts[masks[0]] = 1
    parts[masks[1]] = 2
    return Layout(Instances.from_masks(masks, [2, 2]), parts)


def test_control_image_has_classes_boundaries_and_parts():
    layout = _two_touching_boxes()
    control = control_image(layout, num_classes=6, num_parts=4)
    assert control.shape == (11, 8, 8) and control.dtype == np.float32
    assert np.array_equal(control[2] > 0, layout.instances.masks.any(0)) and control[[0, 1, 3, 4, 5]].sum() == 0
    boundary = control[6] > 0
    assert boundary[3, 3] and boundary[3, 4]  # the seam between the two boxes
    assert not boundary[0, 0] and not boundary[3, 2]  # background; inside the first box
    assert np.array_equal(control[7] > 0, layout.parts == 1) and np.array_equal(control[8] > 0, layout.parts == 2)
    assert control_image(layout, 6, 4, with_parts=False)[7:].sum() == 0
    with pytest.raises(ValueError, match="class id 2, but the control encodes 2 classes"):
        control_image(layout, num_classes=2)
    with pytest.raises(ValueError, match="part id 2, but the control encodes 1 parts"):
        control_image(layout, 6, num_parts=1)
    assert np.array_equal(instance_boundaries(np.zeros((3, 3), np.int32)), np.zeros((3, 3), bool))


def test_captions_count_every_class_with_its_plural():
    names = ["ball", "leaf", "box", "bus", "city"]
    plurals = {"leaf": "leaves"}
    assert count_caption(names, [2, 2, 1], plurals) == "a photo of two boxes and a leaf"
    assert count_caption(names, [1, 1, 1, 3, 3, 4, 4], plurals) == "a photo of three leaves, two buses and two cities"
    assert count_caption(names, [0]) == "a photo of a ball"
    assert count_caption(names, []) == "a photo of an empty scene"


def test_fit_to_crops_and_resizes_image_and_layout_together():
    image = np.zeros((48, 64, 3), np.uint8)
    masks = np.zeros((2, 48, 64), bool)
    masks[0, 10:30, 20:40] = True
    masks[1, 0:5, 0:5] = True  # cut away by the centre crop
    layout = Layout(Instances.from_masks(masks, [0, 1]), np.where(masks[0], 1, 0).astype(np.uint8))
    fitted_image, fitted = fit_to(image, layout, 24)
    assert fitted_image.shape == (24, 24, 3) and fitted.size == (24, 24)
    assert list(fitted.instances.class_id) == [0] and fitted.parts.shape == (24, 24)
    assert fitted.instances.masks[0].sum() == pytest.approx(20 * 20 / 4, rel=0.2)


def test_a_world_folder_reads_as_layouts_with_parts(small_world, tmp_path):
    layouts = open_layouts(small_world, "val")
    assert layouts.class_names[:2] == ["ball", "leaf"] and layouts.num_parts == 4
    with_box = next(i for i in range(len(layouts)) if 2 in layouts.source.instances(i).class_id)
    image, caption, layout = layouts.item(with_box)
    assert image.shape == (32, 32, 3) and ("box" in caption or "boxes" in caption)
    assert np.array_equal(layout.parts, load_semantic_png(small_world / "val" / "parts" / f"{with_box:06d}.png"))
    assert np.array_equal(layout.semantic, load_semantic_png(small_world / "val" / "semantic" / f"{with_box:06d}.png"))
    with pytest.raises(FileNotFoundError, match="expected a dataset folder"):
        open_layouts(tmp_path)


def _config(world, model, **settings):
    values = {"data": str(world), "model": str(model), "steps": 4, "batch_size": 2, "checkpoint_every": 2,
              "learning_rate": 1e-2, "warmup_steps": 0}
    return ControlNetTrainConfig(**{**values, **settings})


@pytest.fixture(scope="module")
def controlnet_run(tiny_world, tiny_pipeline_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("controlnet") / "run"
    train_controlnet(_config(tiny_world, tiny_pipeline_dir), out, progress=False)
    return out


def test_a_trained_controlnet_reloads_offline_and_steers_the_pipeline(controlnet_run, tiny_pipeline_dir, tiny_world):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline

    info = json.loads((controlnet_run / "control.json").read_text())
    assert info["channels"] == 6 + 1 + 4 and info["boundary_channel"] == 6 and info["resolution"] == 16
    controlnet = ControlNetModel.from_pretrained(controlnet_run / "controlnet", local_files_only=True)
    base = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir, local_files_only=True)
    check_controlnet(controlnet, base.unet)
    pipe = StableDiffusionControlNetPipeline(**base.components, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    image, caption, layout = open_layouts(tiny_world, "train").item(0)
    control = torch.from_numpy(control_image(layout, 6, 4))[None]

    def draw(control):
        return pipe(caption, image=control, num_inference_steps=2, guidance_scale=2.0, height=16, width=16,
                    output_type="np", generator=torch.Generator().manual_seed(0)).images

    first = draw(control)
    assert first.shape == (1, 16, 16, 3)
    # the zero convolutions moved off zero in training: the control changes the image
    assert np.abs(first - draw(torch.zeros_like(control))).max() > 1e-3
    rows = [json.loads(line) for line in (controlnet_run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and all(np.isfinite(r["loss"]) for r in rows)


def test_a_resumed_controlnet_run_ends_with_the_same_weights(controlnet_run, tiny_world, tiny_pipeline_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(controlnet_run, copy)
    (copy / "checkpoints" / "step-0000004.pt").unlink()
    shutil.rmtree(copy / "controlnet")
    train_controlnet(_config(tiny_world, tiny_pipeline_dir), copy, resume=True, progress=False)
    first = load_file(controlnet_run / "controlnet" / "diffusion_pytorch_model.safetensors")
    again = load_file(copy / "controlnet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(first[k], again[k]) for k in first)
    with pytest.raises(ValueError, match="other settings"):
        train_controlnet(_config(tiny_world, tiny_pipeline_dir, learning_rate=1e-3), copy, resume=True, progress=False)
    # a finished run goes on for more steps (the learning rate is constant after warm-up)
    train_controlnet(_config(tiny_world, tiny_pipeline_dir, steps=5), copy, resume=True, progress=False)
    assert json.loads((copy / "config.json").read_text())["steps"] == 5
    assert len((copy / "train_log.jsonl").read_text().splitlines()) == 5


def test_a_controlnet_for_another_base_model_is_refused(controlnet_run):
    from diffusers import ControlNetModel

    from synthscene.models.load import load_pipeline

    controlnet = ControlNetModel.from_pretrained(controlnet_run / "controlnet", local_files_only=True)
    with pytest.raises(ValueError, match="made for another base model: its block_out_channels"):
        check_controlnet(controlnet, load_pipeline("embedded").unet)


def test_train_controlnet_cli_refuses_bad_input_and_writes_nothing(tiny_world, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["train-controlnet", "--out", str(tmp_path / "a"), "--data", str(tmp_path / "none")])
    assert result.exit_code == 2 and "expected a dataset folder" in result.output and not (tmp_path / "a").exists()
    result = runner.invoke(app, ["train-controlnet", "--out", str(tmp_path / "b"), "--data", str(tiny_world),
                                 "--batch-size", "0"])
    assert result.exit_code == 2 and "batch_size" in result.output and not (tmp_path / "b").exists()


def _layout_spec(world, model, controlnet, **layout):
    from synthscene.spec import validate_spec
    from synthscene.world import CLASS_NAMES

    return validate_spec({
        "name": "layouts", "model": str(model), "method": "layout", "num_samples": 4, "seed": 2, "shard_size": 2,
        "classes": [{"name": n} for n in CLASS_NAMES], "sampler": {"steps": 2, "guidance": 2.0},
        "layout": {"controlnet": str(controlnet), "source": {"format": "coco", "path": str(
            world / "annotations" / "instances_train.json"), "image_root": str(world)}, **layout},
    })


def test_the_layout_method_labels_each_image_with_its_layout(controlnet_run, tiny_world, tiny_pipeline_dir, tmp_path):
    from synthscene.formats.coco import read_coco
    from synthscene.store import Run
    from tests.helpers import make_run

    run = Run(make_run(_layout_spec(tiny_world, tiny_pipeline_dir, controlnet_run), tmp_path / "run"))
    source = read_coco(tiny_world / "annotations" / "instances_train.json", [tiny_world])
    samples = list(run.samples())
    assert len(samples) == 4
    for sample in samples:
        index = sample.extra["source_index"]
        truth = source.instances(index)
        assert np.array_equal(sample.instances.masks, truth.masks) and list(sample.instances.class_id) == list(truth.class_id)
        assert np.array_equal(sample.semantic, load_semantic_png(tiny_world / "train" / "semantic" / f"{index:06d}.png"))
        assert np.array_equal(sample.parts, load_semantic_png(tiny_world / "train" / "parts" / f"{index:06d}.png"))
        assert sample.image.shape == (16, 16, 3) and not sample.instances.data["parts_inferred"].any()

    # a filtered view keeps the parts of the instances it keeps, and only those
    from synthscene.filter import filter_run

    assert any(4 in s.instances.class_id for s in samples)
    filter_run(run.root, tmp_path / "no-stars", where="category != 'star'", progress=False)
    for sample, kept in zip(samples, Run(tmp_path / "no-stars").samples()):
        stars = sample.instances.masks[sample.instances.class_id == 4].any(0) if len(sample.instances) else None
        expected = sample.parts if stars is None else np.where(stars, 0, sample.parts)
        assert np.array_equal(kept.parts, expected)


def test_sampled_layouts_place_visible_shapes_and_infer_missing_parts(controlnet_run, tiny_world, tiny_pipeline_dir,
                                                                      tmp_path):
    from synthscene.methods import layout as method
    from synthscene.train.parts import PartsTrainConfig, train_parts

    spec = _layout_spec(tiny_world, tiny_pipeline_dir, controlnet_run, mode="sampled",
                        sampled={"objects": [2, 3], "side": [0.4, 0.7]})
    tasks = method.plan(spec)
    assert tasks == method.plan(spec)  # a function of the spec alone
    worker = method.Worker(spec)
    for task in tasks:
        layout, inferred = worker.layout_with_parts(task)
        assert 2 <= len(layout.instances) <= 3 and layout.size == (16, 16)
        assert all(area >= 4 for area in layout.instances.area)
        names = [spec.class_names[c] for c in layout.instances.class_id]
        assert all(name in task.caption or name[:3] in task.caption for name in names)
        assert not any(inferred)  # the world's shapes bring their own parts

    # a source without part maps: its part-aware instances get inferred parts
    bare = tmp_path / "bare"
    shutil.copytree(tiny_world, bare)
    (bare / "world.json").unlink()
    spec = _layout_spec(bare, tiny_pipeline_dir, controlnet_run)
    with pytest.raises(ValueError, match="source has no part maps: give layout.part_model"):
        method.check(spec, method.plan(spec))
    part_run = train_parts(PartsTrainConfig(data=str(tiny_world), steps=2, batch_size=2, width=32, layers=1,
                                            supports=1), tmp_path / "parts", progress=False)
    spec = _layout_spec(bare, tiny_pipeline_dir, controlnet_run, part_model=str(part_run))
    tasks = method.plan(spec)
    method.check(spec, tasks)
    worker = method.Worker(spec)
    seen_inferred = False
    for task in tasks:
        layout, inferred = worker.layout_with_parts(task)
        for mask, class_id, was_inferred in zip(layout.instances.masks, layout.instances.class_id, inferred):
            aware = spec.class_names[int(class_id)] in ("box", "star")
            assert was_inferred == aware
            assert (layout.parts[mask] > 0).all() == aware
            seen_inferred |= was_inferred
    assert seen_inferred


def test_the_shape_pool_keeps_only_whole_shapes_unless_asked_for_all():
    """A shape another object touches (covers) or the border cuts is left out of a whole-only
    pool: rearranged, its visible part would be a new shape."""
    from synthscene.layout.compose import is_whole, shape_pool

    masks = np.zeros((4, 16, 16), bool)
    masks[0, 2:6, 2:6] = True  # alone
    masks[1, 8:12, 2:6] = True  # touches 2
    masks[2, 8:12, 6:10] = True
    masks[3, 0:4, 12:15] = True  # cut by the top border
    assert [is_whole(masks, k) for k in range(4)] == [True, False, False, False]

    class Source:
        def __len__(self):
            return 1

        def instances(self, index):
            return Instances.from_masks(masks, np.array([0, 1, 1, 2]))

    assert [p.class_id for p in shape_pool(Source(), {0, 1, 2}, 1, whole_only=True)] == [0]
    assert [p.class_id for p in shape_pool(Source(), {0, 1, 2}, 1)] == [0, 1, 1, 2]


def test_layout_specs_that_cannot_work_are_refused_before_anything_is_written(controlnet_run, tiny_world,
                                                                               tiny_pipeline_dir, tmp_path):
    from synthscene.methods import layout as method
    from synthscene.spec import SpecError

    spec = _layout_spec(tiny_world, "embedded", controlnet_run)
    with pytest.raises(ValueError, match="made for another base model"):
        method.check(spec, method.plan(spec))
    spec = _layout_spec(tiny_world, tiny_pipeline_dir, controlnet_run)
    wrong = spec.model_copy(update={"classes": spec.classes[:5]})
    with pytest.raises(ValueError, match="classes must be the source's"):
        method.plan(wrong)
    spec = _layout_spec(tiny_world, tiny_pipeline_dir, controlnet_run, mode="sampled", sampled={"size": [17, 17]})
    with pytest.raises(ValueError, match="17x17 layout does not fit the model"):
        method.check(spec, method.plan(spec))
    with pytest.raises(SpecError, match="needs ade20k_classes"):
        _layout_spec(tiny_world, tiny_pipeline_dir, controlnet_run, palette="ade20k")
    spec = _layout_spec(tiny_world, tiny_pipeline_dir, controlnet_run, palette="ade20k",
                        ade20k_classes={"ball": "ball", "leaf": "plant", "box": "box", "hat": "apparel",
                                        "star": "flag", "ring": "plaything"})
    method.check(spec, method.plan(spec))  # every class has an ADE20K colour
    spec = _layout_spec(tiny_world, tiny_pipeline_dir, controlnet_run, palette="ade20k",
                        ade20k_classes={"ball": "beachball"})
    with pytest.raises(ValueError, match="not ADE20K classes: beachball"):
        method.check(spec, method.plan(spec))


def test_a_segmentation_controlnet_of_elsewhere_draws_layouts_through_the_ade20k_palette(
        tiny_world, tiny_pipeline_dir, tmp_path):
    """A 3-channel ControlNet folder without control.json (as lllyasviel/sd-controlnet-seg is),
    saved and reloaded offline: the spec's classes are painted in their ADE20K colours, the
    samples are labelled with their layouts, the conditioning scale is diffusers' 1."""
    from diffusers import StableDiffusionPipeline

    from synthscene.formats.coco import read_coco
    from synthscene.store import Run
    from synthscene.train.controlnet import build_controlnet
    from tests.helpers import make_run

    base = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir, local_files_only=True)
    vae_factor = 2 ** (len(base.vae.config.block_out_channels) - 1)
    build_controlnet(base.unet, vae_factor, 3).save_pretrained(tmp_path / "seg", safe_serialization=True)
    spec = _layout_spec(tiny_world, tiny_pipeline_dir, tmp_path / "seg", palette="ade20k",
                        ade20k_classes={"ball": "ball", "leaf": "plant", "box": "box", "hat": "apparel",
                                        "star": "flag", "ring": "plaything"})
    samples = list(Run(make_run(spec, tmp_path / "run")).samples())
    source = read_coco(tiny_world / "annotations" / "instances_train.json", [tiny_world])
    assert len(samples) == 4
    for sample in samples:
        truth = source.instances(sample.extra["source_index"])
        assert np.array_equal(sample.instances.masks, truth.masks)
        assert sample.extra["conditioning_scale"] == 1.0 and sample.parts is None
        assert sample.image.dtype == np.uint8 and sample.image.std() > 0


def test_an_ade20k_control_paints_each_class_in_its_palette_colour():
    from synthscene.methods.layout import ade20k_control, ade20k_palette

    palette = ade20k_palette()
    assert len(palette) == 150 and palette[0] == {"name": "wall", "color": [120, 120, 120]}
    layout = _two_touching_boxes()
    image = ade20k_control(layout, ["ball", "leaf", "box"], {"ball": "ball", "leaf": "plant", "box": "box"})
    box = next(c["color"] for c in palette if c["name"] == "box")
    assert image.shape == (3, 8, 8)
    assert np.allclose(image[:, 3, 2] * 255, box) and np.allclose(image[:, 0, 0], 0)


def test_the_shipped_controlnet_fits_the_embedded_model_and_the_world():
    from diffusers import ControlNetModel

    from synthscene.methods.layout import controlnet_folder, read_control_info
    from synthscene.models.load import load_pipeline
    from synthscene.world import CLASS_NAMES, PART_NAMES

    info = read_control_info("embedded")
    assert info["class_names"] == list(CLASS_NAMES) and info["resolution"] == 32
    assert [f"{p['class']}/{p['name']}" for p in info["parts"]] == list(PART_NAMES)
    folder = controlnet_folder("embedded")
    assert all(p.suffix != ".bin" for p in folder.rglob("*"))
    check_controlnet(ControlNetModel.from_pretrained(folder, local_files_only=True), load_pipeline("embedded").unet)


def test_the_example_spec_runs_on_the_shipped_models(small_world, tmp_path):
    """examples/shapes-layout.yaml with the embedded model, ControlNet and part model, on a
    world without part maps, so every box and star gets inferred parts."""
    from synthscene.methods.layout import read_control_info
    from synthscene.spec import load_spec, validate_spec
    from synthscene.store import Run
    from tests.helpers import make_run

    bare = tmp_path / "world"
    shutil.copytree(small_world, bare)
    (bare / "world.json").unlink()
    data = load_spec("examples/shapes-layout.yaml").model_dump(mode="json")
    data.update(num_samples=3, shard_size=3, sampler={"steps": 2, "guidance": 7.5})
    data["layout"]["source"] = {"format": "coco", "path": str(bare / "annotations" / "instances_val.json"),
                                "image_root": str(bare)}
    samples = list(Run(make_run(validate_spec(data), tmp_path / "run")).samples())
    assert len(samples) == 3 and any(np.isin(s.instances.class_id, [2, 4]).any() for s in samples)
    for sample in samples:
        aware = np.isin(sample.instances.class_id, [2, 4])
        assert list(sample.instances.data["parts_inferred"]) == list(aware)
        assert np.array_equal(sample.parts > 0, np.isin(sample.semantic, [3, 5]))
        assert sample.image.shape == (32, 32, 3)
        # the spec leaves the conditioning scale to the ControlNet: the one chosen for it
        assert sample.extra["conditioning_scale"] == read_control_info("embedded")["conditioning_scale"] == 2.0
