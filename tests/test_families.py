"""Every model family through one seam: SDXL, SD3 and FLUX pipelines (tiny, random, saved and
reloaded offline) run text2labels and mosaic end to end; their bad inputs are refused before
anything is written."""

import json
import shutil

import numpy as np
import pytest
import torch

from synthscene.methods import mosaic
from synthscene.models.families import family_of, pack_latents, unpack_latents
from synthscene.models.info import model_info, model_text_layout, pipeline_info
from synthscene.models.load import load_pipeline
from synthscene.models.text_layout import text_layout
from synthscene.spec import MosaicSpec, validate_spec
from synthscene.store import open_run
from tests.helpers import make_run
from tests.tiny_models import WORDS, tiny_pipeline

FAMILIES = ["sdxl", "sd3", "flux"]
SCHEDULER = {"sdxl": "ddim", "sd3": "flow_match_euler", "flux": "flow_match_euler"}
CLASSES = [{"name": "ball"}, {"name": "leaf"}, {"name": "box"}]


@pytest.fixture(scope="module", params=FAMILIES)
def family_dir(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "pipe"
    tiny_pipeline(request.param).save_pretrained(path)
    return request.param, path


def _text2labels_spec(name, path, **text2labels):
    return validate_spec({
        "name": f"t2l-{name}", "model": str(path), "num_samples": 3, "seed": 2, "shard_size": 2, "classes": CLASSES,
        # 32 px: an 8x8 token grid on the transformers (2x2 patches of 16x16 latents), 16x16 latents on SDXL
        "sampler": {"scheduler": SCHEDULER[name], "steps": 2, "guidance": 3.0, "size": [32, 32]},
        "text2labels": {"recipe": "faithful", "self_resolution": 8, "cross_resolutions": [8], "min_instance_area": 1,
                        **text2labels},
    })


def test_configs_alone_say_what_the_loaded_pipeline_is(family_dir):
    name, path = family_dir
    info = model_info(str(path))
    pipe = load_pipeline(str(path))
    assert info == pipeline_info(pipe)
    assert info.family == family_of(pipe).name == name
    assert info.flow_matching == (name != "sdxl") and info.joint_attention == (name != "sdxl")
    assert info.latent_multiple == {"sdxl": 4, "sd3": 2, "flux": 2}[name]
    assert info.max_latent_size == {"sdxl": None, "sd3": 64, "flux": None}[name]  # SD3: 32 positions x 2
    assert model_text_layout(str(path)).length == {"sdxl": 77, "sd3": 77 + 256, "flux": 512}[name]


@pytest.mark.parametrize("recipe, tokens", [("faithful", "from_first_class_word"), ("ours", "from_first_class_word"),
                                            ("ours", "class_words")])
def test_text2labels_runs_on_each_family(family_dir, recipe, tokens, tmp_path):
    name, path = family_dir
    out = make_run(_text2labels_spec(name, path, recipe=recipe, objectness_tokens=tokens), tmp_path / "run")
    samples = list(open_run(out).samples())
    assert len(samples) == 3
    labelled = asked = 0
    for sample in samples:
        assert sample.image.shape == (32, 32, 3) and sample.semantic.shape == (32, 32)
        found = set(np.unique(sample.semantic).tolist()) - {0, 255}
        assert found <= {c + 1 for c in sample.class_ids}  # only the prompt's classes
        labelled += bool(found)
        # ours: the not-drawn check asked the classifier, through the family's adapter
        evidence = {e["class_id"] for e in sample.extra.get("class_evidence", [])}
        assert evidence <= set(sample.class_ids)
        asked += bool(evidence)
    if recipe == "ours":
        assert asked
    else:
        assert labelled  # min-max per class: a named class claims its most attended pixels


def test_word_encoders_read_one_encoder_or_are_refused_before_writing(family_dir, tmp_path):
    name, path = family_dir
    missing = {"sdxl": "t5", "sd3": None, "flux": "clip"}[name]  # FLUX's attention sees T5 tokens only
    read = "clip" if name == "sdxl" else "t5"
    out = make_run(_text2labels_spec(name, path, recipe="ours", objectness_tokens="class_words", word_encoders=read),
                   tmp_path / "run")
    assert len(list(open_run(out).samples())) == 3
    if missing:
        with pytest.raises(ValueError, match=f"text2labels.word_encoders '{missing}': this model's attention sees no"):
            make_run(_text2labels_spec(name, path, word_encoders=missing), tmp_path / "refused")
        mosaic_spec = validate_spec({
            "name": "refused", "method": "mosaic", "model": str(path), "num_samples": 1, "classes": CLASSES,
            "sampler": {"scheduler": SCHEDULER[name], "steps": 2}, "mosaic": {"grid": [1, 2], "word_encoders": missing}})
        with pytest.raises(ValueError, match=f"mosaic.word_encoders '{missing}'"):
            make_run(mosaic_spec, tmp_path / "refused")
        assert not (tmp_path / "refused").exists()
        return
    # SD3: the same capture labelled from its CLIP words and from its T5 words gives other labels
    from synthscene.methods import text2labels
    from synthscene.methods.text2labels import capture_batch, label_sample

    spec = _text2labels_spec(name, path)
    tasks = text2labels.plan(spec)
    pipe = load_pipeline(str(path))
    captured = capture_batch(pipe, tasks, spec)
    semantics = {encoders: [label_sample(family_of(pipe).text_layout(), captured, b, task,
                                         spec.text2labels.model_copy(update={"word_encoders": encoders}),
                                         len(CLASSES)).semantic for b, task in enumerate(tasks)]
                 for encoders in ("clip", "t5")}
    assert any((a != b).any() for a, b in zip(semantics["clip"], semantics["t5"]))


def test_mosaic_runs_on_each_family_batched_as_sequential(family_dir, tmp_path):
    name, path = family_dir
    spec = validate_spec({
        "name": f"mosaic-{name}", "method": "mosaic", "model": str(path), "num_samples": 2, "seed": 4,
        "shard_size": 2, "classes": CLASSES, "sampler": {"scheduler": SCHEDULER[name], "steps": 2, "guidance": 3.0},
        "mosaic": {"grid": [1, 2], "region_size": [32, 32], "min_class_gain": None, "area_range": [0.0, 1.0],
                   "objectness_tokens": "class_words"},
    })
    out = make_run(spec, tmp_path / "run")
    samples = list(open_run(out).samples())
    assert len(samples) == 2
    for sample in samples:
        canvas = sample.extra["layout"]["canvas"]
        assert sample.image.shape[:2] == (canvas[0] * 2, canvas[1] * 2)  # the tiny VAEs' factor 2
        assert len(sample.extra["region_prompts"]) == 2

    pipe = load_pipeline(str(path))
    task = mosaic.plan(spec)[0]
    from synthscene.capture import CaptureConfig

    runs = [mosaic.generate_mosaic(pipe, list(task.region_prompts), task.layout, 2, 3.0,
                                   torch.Generator().manual_seed(0), batched, CaptureConfig(cross_resolutions=()))
            for batched in (True, False)]
    assert np.abs(runs[0].image.astype(int) - runs[1].image.astype(int)).max() <= 1
    for region in range(2):
        maps = [run.cross[region] for run in runs]
        assert maps[0].keys() == maps[1].keys()
        assert all(torch.allclose(maps[0][hw], maps[1][hw], atol=1e-4) for hw in maps[0])


def test_flux_packing_round_trips():
    latents = torch.randn(2, 4, 6, 8)
    tokens = pack_latents(latents)
    assert tokens.shape == (2, 12, 16)
    assert torch.equal(tokens[0, 1], latents[0, :, 0:2, 2:4].reshape(4, 4).reshape(-1))  # row-major 2x2 patches
    assert torch.equal(unpack_latents(tokens, 6, 8), latents)


def test_words_sit_in_every_encoders_part_of_the_text_axis():
    from synthscene.models.tokenizer import build_clip_tokenizer, build_t5_tokenizer

    clip, t5 = build_clip_tokenizer(10_000), build_t5_tokenizer(WORDS)
    layout = text_layout("sd3", {"tokenizer": clip, "tokenizer_3": t5})
    prompt = "a photo of a ball and a leaf"
    positions = layout.positions(prompt, "leaf")
    assert positions == [8, 77 + 7]  # CLIP: BOS first; T5: no BOS
    assert clip.convert_ids_to_tokens(clip(prompt).input_ids[8]) == "leaf</w>"
    assert t5.convert_ids_to_tokens(t5(prompt).input_ids[7]) == "▁leaf"
    objects = layout.object_tokens(prompt, ["ball", "leaf"])
    assert objects[0] == 5 and 76 in objects and 77 + 4 in objects and 77 + 3 not in objects
    # the class words alone (objectness_tokens: class_words): "ball" and "leaf" in each part
    assert layout.object_tokens(prompt, ["ball", "leaf"], class_words_only=True) == [5, 8, 77 + 4, 77 + 7]
    # word_encoders: one encoder's words, at their place in the full axis
    t5_only, clip_only = layout.reading("t5"), layout.reading("clip")
    assert t5_only.positions(prompt, "leaf") == [77 + 7] and clip_only.positions(prompt, "leaf") == [8]
    assert t5_only.object_tokens(prompt, ["ball", "leaf"], class_words_only=True) == [77 + 4, 77 + 7]
    # from the first class word on: to the end of the T5 part only; the axis itself is unchanged
    assert t5_only.object_tokens(prompt, ["ball", "leaf"]) == list(range(77 + 4, layout.length))
    assert t5_only.length == layout.length and layout.reading("all") is layout
    with pytest.raises(ValueError, match="for CLIP-L / CLIP-G"):  # the unread CLIP still bounds the prompt
        t5_only.check("a ball " * 40)
    flux = text_layout("flux", {"tokenizer": clip, "tokenizer_2": t5}).reading("t5")
    with pytest.raises(ValueError, match="for CLIP "):  # FLUX's pooled-only CLIP too
        flux.check("a ball " * 40)
    with pytest.raises(ValueError, match="mosaic.word_encoders 't5': this model's attention sees no T5 tokens; "
                                         "use 'all' or 'clip'"):
        text_layout("sd", {"tokenizer": clip}).reading("t5", "mosaic.word_encoders")
    with pytest.raises(ValueError, match="T5 tokens are zeros \\(it was loaded without that encoder\\)"):
        text_layout("sd3", {"tokenizer": clip}).reading("t5")
    with pytest.raises(ValueError, match="expected one of all, clip, t5"):
        layout.reading("T5")


def test_bad_family_input_is_refused_before_anything_is_written(family_dir, tmp_path):
    name, path = family_dir
    if name == "sdxl":
        pytest.skip("SDXL runs every recipe step but the classifier, refused as before")
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="flow matching"):
        spec = _text2labels_spec(name, path)
        make_run(spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"scheduler": "ddim"})}), run)
    with pytest.raises(ValueError, match="8x8 token grid; set self_resolution: 8"):
        make_run(_text2labels_spec(name, path, self_resolution=4), run)
    with pytest.raises(ValueError, match="multiples of 4 px"):
        spec = _text2labels_spec(name, path)
        make_run(spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"size": (34, 32)})}), run)
    # a prompt that CLIP reads in 31 tokens but the tiny T5, spelling a word it lacks letter by
    # letter, truncates (SD3 at 256, FLUX at 512 tokens)
    long = "a ball " + "beautiful " * {"sd3": 27, "flux": 55}[name]
    with pytest.raises(ValueError, match="longer than .* tokens for T5"):
        model_text_layout(str(path)).check(long)
    with pytest.raises(ValueError, match="divisible by 2"):
        mosaic.plan_layout(MosaicSpec(canvas=(40, 32)), model_info(str(path)), np.random.default_rng(0))
    if name == "sd3":  # its position embedding covers 32 tokens of 2x2 latents = 128 px at VAE factor 2
        spec = _text2labels_spec(name, path)
        spec.sampler.model_copy(update={"size": (128, 128)}).check_model(model_info(str(path)))  # the largest
        with pytest.raises(ValueError, match="up to 128 px"):
            spec = _text2labels_spec(name, path)
            make_run(spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"size": (160, 128)})}), run)
        with pytest.raises(ValueError, match="exceed the 128 px this sd3 model's position embedding covers"):
            mosaic.plan_layout(MosaicSpec(region_size=(128, 128)), model_info(str(path)), np.random.default_rng(0))
    assert not run.exists()


def test_methods_refuse_families_they_do_not_run_on(family_dir, tmp_path):
    from synthscene.grounding.train import GroundingTrainConfig, train_grounding
    from synthscene.methods.restyle import check_mode
    from synthscene.models.info import require_family
    from synthscene.spec import RestyleSpec
    from synthscene.train.controlnet import ControlNetTrainConfig, train_controlnet

    name, path = family_dir
    info = model_info(str(path))
    with pytest.raises(ValueError, match=f"runs on SD 1.x / 2.x pipelines; this model is {name.upper()}"):
        require_family(info, "method 'layout' (a ControlNet)")
    # the trainers on UNet features refuse before they write their run folder
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="train-grounding .* runs on SD 1.x / 2.x"):
        train_grounding(GroundingTrainConfig(teacher="none", model=str(path), base_classes=("ball",)), out)
    with pytest.raises(ValueError, match="train-controlnet runs on SD 1.x / 2.x"):
        train_controlnet(ControlNetTrainConfig(data="none", model=str(path)), out)
    assert not out.exists()
    if name == "sdxl":
        check_mode(info, RestyleSpec.model_construct())  # restyle runs on SDXL
    else:
        with pytest.raises(ValueError, match="method 'restyle' runs on SD 1.x / 2.x / SDXL"):
            check_mode(info, RestyleSpec.model_construct())


def test_an_unknown_denoiser_is_refused_by_name(tmp_path):
    path = tmp_path / "pipe"
    tiny_pipeline("sd3").save_pretrained(path)
    config = json.loads((path / "transformer" / "config.json").read_text())
    config["_class_name"] = "PixArtTransformer2DModel"
    (path / "transformer" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unknown model family: denoiser PixArtTransformer2DModel"):
        model_info(str(path))
    shutil.rmtree(path)


def test_sd3_without_its_t5_keeps_the_clip_words_and_zero_t5_tokens():
    from synthscene.capture import AttentionStore, CaptureConfig, capture_attention

    pipe = tiny_pipeline("sd3")
    pipe.text_encoder_3 = pipe.tokenizer_3 = None  # as StableDiffusion3Pipeline.from_pretrained(..., text_encoder_3=None)
    family = family_of(pipe)
    layout = family.text_layout()
    assert layout.length == 77 + 256 and layout.positions("a photo of a ball", "ball") == [5]
    store = AttentionStore(CaptureConfig(cross_resolutions=()), num_steps=1, guidance=True)
    with capture_attention(family.denoiser, store):
        pipe("a photo of a ball", num_inference_steps=1, guidance_scale=3.0, height=32, width=32, output_type="np",
             **family.pipeline_kwargs())
    assert store.cross_maps()[(8, 8)].shape == (1, 77 + 256, 8, 8)
