import numpy as np
import pytest

from synthscene.engine.run import run_spec
from synthscene.formats.cityscapes import CityscapesSource
from synthscene.methods import restyle
from synthscene.models.info import model_info
from synthscene.spec import SpecError, validate_spec
from synthscene.store import open_run
from synthscene.world import CLASS_NAMES
from synthscene.world.build import write_world
from tests.helpers import make_run, shard_digest


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    """A 16 px shapes world (the tiny pipeline's side) in the Cityscapes layout."""
    root = write_world(tmp_path_factory.mktemp("restyle") / "w", n_train=5, n_val=1, seed=4, size=16,
                       progress=False, cityscapes=True)
    return root / "cityscapes"


@pytest.fixture(scope="module")
def inpainting_pipeline_dir(tmp_path_factory):
    """A tiny random inpainting pipeline (9-channel UNet: latents, mask, masked image), saved."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    from synthscene.models.configs import ARCHITECTURES, build_components, sampling_scheduler

    torch.manual_seed(0)
    parts = build_components(ARCHITECTURES["tiny"])
    unet = UNet2DConditionModel(**{**parts["unet"].config, "in_channels": 9})
    pipe = StableDiffusionInpaintPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"], unet=unet,
        scheduler=sampling_scheduler(parts["scheduler"]), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    path = tmp_path_factory.mktemp("inpaint") / "pipe"
    pipe.save_pretrained(path)
    return path


def _spec(model, source, **restyle_fields):
    return validate_spec({
        "method": "restyle", "name": "restyle", "model": str(model), "num_samples": 6, "seed": 2, "shard_size": 4,
        "classes": [{"name": n} for n in CLASS_NAMES], "sampler": {"steps": 4, "guidance": 3.0},
        "restyle": {"source": {"format": "cityscapes", "path": str(source)}, "instances_per_image": 2,
                    "variants_per_instance": 2, "min_instance_area": 4,
                    "style_prompts": {"ball": ["a photo of a striped ball", "a photo of a shiny ball"]},
                    **restyle_fields},
    })


def test_restyle_changes_only_the_chosen_masks_and_keeps_the_labels(tiny_pipeline_dir, street, tmp_path):
    spec = _spec(tiny_pipeline_dir, street)
    out = make_run(spec, tmp_path / "run")
    source = CityscapesSource(street)
    samples = list(open_run(out).samples())
    assert len(samples) == 6
    changed_inside = 0
    for sample in samples:
        original = source.sample(sample.extra["source"]["index"])
        chosen = sample.extra["restyled_instances"]
        assert chosen == restyle.chosen_instances(original.instances, spec.restyle)
        assert len(chosen) <= 2 and sample.extra["source"]["city"] == "world"
        inside = original.instances.masks[chosen].any(axis=0)
        assert np.array_equal(sample.image[~inside], original.image[~inside])  # byte for byte
        changed_inside += int((sample.image[inside] != original.image[inside]).any())
        assert np.array_equal(sample.semantic, original.semantic)
        assert np.array_equal(sample.instances.masks, original.instances.masks)
        assert np.array_equal(sample.instances.class_id, original.instances.class_id)
        for prompt, position in zip(sample.extra["prompts"], chosen):
            name = CLASS_NAMES[int(original.instances.class_id[position])]
            assert prompt in (spec.restyle.style_prompts.get(name) or (f"a photo of a {name}",))
    assert changed_inside == len(samples)
    # the variants of one image differ; the run is reproducible
    assert not np.array_equal(samples[0].image, samples[1].image)
    assert shard_digest(make_run(spec, tmp_path / "again")) == shard_digest(out)


def test_inpainting_model_is_detected_and_modes_are_checked(tiny_pipeline_dir, inpainting_pipeline_dir, street,
                                                           tmp_path):
    out = make_run(_spec(inpainting_pipeline_dir, street, mode="auto"), tmp_path / "inpaint")
    samples = list(open_run(out).samples())
    assert {s.extra["mode"] for s in samples} == {"inpaint"}
    source = CityscapesSource(street)
    for sample in samples:
        original = source.sample(sample.extra["source"]["index"])
        inside = original.instances.masks[sample.extra["restyled_instances"]].any(axis=0)
        assert np.array_equal(sample.image[~inside], original.image[~inside])
    for model, mode, words in ((tiny_pipeline_dir, "inpaint", "needs an inpainting model"),
                               (inpainting_pipeline_dir, "blend", "this is an inpainting model")):
        with pytest.raises(ValueError, match=words):
            run_spec(_spec(model, street, mode=mode), tmp_path / f"refused-{mode}", progress=False)
        assert not (tmp_path / f"refused-{mode}").exists()


@pytest.fixture(scope="module", params=[9, 4], ids=["inpainting", "text-to-image"])
def sdxl_pipeline_dir(request, tmp_path_factory):
    """A tiny random SDXL pipeline (two text encoders, pooled text + time ids as added
    conditioning), saved as diffusers' own tests build one: an inpainting one (9-channel UNet)
    and a text-to-image one (4 channels, restyled by blended latent diffusion)."""
    import torch
    from diffusers import StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from synthscene.models.configs import ARCHITECTURES, build_components, sampling_scheduler

    torch.manual_seed(0)
    parts = build_components(ARCHITECTURES["tiny"])
    text_config = parts["text_encoder"].config
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**{**text_config.to_dict(), "projection_dim": 32}))
    time_dim = 8  # SDXL's six time ids (original size, crop corner, target size), each embedded in time_dim
    unet = UNet2DConditionModel(**{
        **parts["unet"].config, "in_channels": request.param, "cross_attention_dim": 2 * text_config.hidden_size,
        "addition_embed_type": "text_time", "addition_time_embed_dim": time_dim,
        "projection_class_embeddings_input_dim": 32 + 6 * time_dim})
    pipe = StableDiffusionXLInpaintPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], text_encoder_2=text_encoder_2,
        tokenizer=parts["tokenizer"], tokenizer_2=parts["tokenizer"], unet=unet,
        scheduler=sampling_scheduler(parts["scheduler"]), requires_aesthetics_score=False)
    path = tmp_path_factory.mktemp(f"sdxl-{request.param}") / "pipe"
    pipe.save_pretrained(path)
    return path


def test_sdxl_models_restyle_inside_the_masks_only(sdxl_pipeline_dir, street, tmp_path):
    inpainting = model_info(str(sdxl_pipeline_dir)).unet_in_channels == 9
    spec = _spec(sdxl_pipeline_dir, street)
    out = make_run(spec, tmp_path / "sdxl")
    samples = list(open_run(out).samples())
    assert len(samples) == 6 and {s.extra["mode"] for s in samples} == {"inpaint" if inpainting else "blend"}
    source = CityscapesSource(street)
    changed = 0
    for sample in samples:
        original = source.sample(sample.extra["source"]["index"])
        inside = original.instances.masks[sample.extra["restyled_instances"]].any(axis=0)
        assert np.array_equal(sample.image[~inside], original.image[~inside])
        assert np.array_equal(sample.instances.masks, original.instances.masks)
        changed += int((sample.image[inside] != original.image[inside]).any())
    assert changed == len(samples)
    wrong, words = ("blend", "this is an inpainting model") if inpainting else ("inpaint", "needs an inpainting model")
    with pytest.raises(ValueError, match=words):
        run_spec(_spec(sdxl_pipeline_dir, street, mode=wrong), tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()


def test_bad_restyle_specs_get_one_clear_error(tiny_pipeline_dir, street, tmp_path):
    with pytest.raises(SpecError, match="style_prompts for a class not in the taxonomy"):
        _spec(tiny_pipeline_dir, street, style_prompts={"giraffe": ["a giraffe"]})
    with pytest.raises(SpecError, match="has no {name} placeholder"):
        _spec(tiny_pipeline_dir, street, style_template="a photo")
    with pytest.raises(ValueError, match="not a Cityscapes layout"):
        run_spec(_spec(tiny_pipeline_dir, tmp_path), tmp_path / "out", progress=False)
    wrong = _spec(tiny_pipeline_dir, street).model_copy(update={"classes": _spec(tiny_pipeline_dir, street).classes[:3]})
    with pytest.raises(ValueError, match="classes must be the source's"):
        restyle.plan(wrong)
    with pytest.raises(ValueError, match="fewer than num_samples 500"):
        restyle.plan(_spec(tiny_pipeline_dir, street).model_copy(update={"num_samples": 500}))
    assert not (tmp_path / "out").exists()


def test_square_crop_stays_inside_the_image_and_holds_the_box():
    x0, y0, side = restyle.square_crop((100, 50, 127, 60), 64, 128, 32)
    assert side == 32 and x0 + side <= 128 and x0 <= 100 and 0 <= y0 <= 50 and y0 + side >= 60
    assert restyle.square_crop((0, 0, 100, 10), 64, 128, 32)[2] == 64  # at most the shorter side
    assert restyle.square_crop((5, 5, 9, 9), 64, 128, 16) == (0, 0, 16)


def test_wide_sources_get_focused_crops_by_default(tiny_pipeline_dir, tmp_path):
    from synthscene.formats.cityscapes import CITYSCAPES
    from tests.helpers import write_street

    write_street(tmp_path / "cs")
    spec = validate_spec({
        "method": "restyle", "name": "wide", "model": str(tiny_pipeline_dir), "num_samples": 2, "seed": 0,
        "classes": [{"name": n} for n in CITYSCAPES.class_names], "sampler": {"steps": 2, "guidance": 1.0},
        "restyle": {"source": {"format": "cityscapes", "path": str(tmp_path / "cs")}, "min_instance_area": 4}})
    tasks = restyle.plan(spec)
    assert all(t.window is not None for t in tasks)
    samples = list(open_run(make_run(spec, tmp_path / "run")).samples())
    for sample, task in zip(samples, tasks):
        assert sample.image.shape == (24, 48, 3) and sample.extra["focused_crop"] == list(task.window)
        assert "focused_crop" in sample.dropped
    off = spec.model_copy(update={"restyle": spec.restyle.model_copy(update={"focused_crops": False})})
    assert all(t.window is None for t in restyle.plan(off))
