import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from synthscene.models.load import load_pipeline
from synthscene.train.generator import GeneratorTrainingConfig, train_generator
from synthscene.train.image_captions import TrainingDataError


def _config(data, out, **overrides):
    base = dict(data=str(data), out=str(out), architecture="tiny", steps=12, vae_steps=6, batch_size=8,
                learning_rate=1e-3, checkpoint_every=6, progress=False, seed=0)
    return GeneratorTrainingConfig(**{**base, **overrides})


def _losses(out):
    return [json.loads(line)["loss"] for line in open(out / "loss.jsonl")]


@pytest.mark.slow
def test_loss_falls_on_tiny_config(tiny_world, tmp_path):
    train_generator(_config(tiny_world / "train", tmp_path / "run", steps=60, vae_steps=10, checkpoint_every=60))
    losses = _losses(tmp_path / "run")
    assert np.mean(losses[-10:]) < 0.9 * np.mean(losses[:10])


def test_save_load_round_trip_offline(tiny_world, tmp_path):
    model_dir = train_generator(_config(tiny_world / "train", tmp_path / "run"))
    assert (model_dir / "model_index.json").is_file()
    assert not list(model_dir.rglob("*.bin")), "weights must be safetensors"
    pipe = load_pipeline(str(model_dir))
    saved = load_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    for name, tensor in pipe.unet.state_dict().items():
        assert torch.equal(tensor, saved[name])

    def run(seed):
        return pipe("a red ball", num_inference_steps=2, guidance_scale=2.0, output_type="np",
                    generator=torch.Generator().manual_seed(seed)).images

    first, again, other = run(0), run(0), run(1)
    assert first.shape == (1, 16, 16, 3)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


@pytest.mark.slow
def test_resume_continues_exactly(tiny_world, tmp_path):
    straight = train_generator(_config(tiny_world / "train", tmp_path / "straight"))
    # the same run stopped after its first checkpoint, then resumed
    train_generator(_config(tiny_world / "train", tmp_path / "resumed", steps=6))
    resumed = train_generator(_config(tiny_world / "train", tmp_path / "resumed"), resume=True)
    a = load_file(straight / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")


def _write_metadata(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_empty_training_set(tmp_path):
    _write_metadata(tmp_path / "data", [])
    with pytest.raises(TrainingDataError, match="empty"):
        train_generator(_config(tmp_path / "data", tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_corrupt_image(tiny_world, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bad.png").write_bytes(b"not a png at all")
    _write_metadata(tmp_path / "data", [{"file_name": "bad.png", "text": "a red ball"}])
    with pytest.raises(TrainingDataError, match="bad.png is corrupt"):
        train_generator(_config(tmp_path / "data", tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_missing_image_and_missing_folder(tmp_path):
    _write_metadata(tmp_path / "data", [{"file_name": "nowhere.png", "text": "a red ball"}])
    with pytest.raises(TrainingDataError, match="nowhere.png does not exist"):
        train_generator(_config(tmp_path / "data", tmp_path / "run"))
    with pytest.raises(TrainingDataError, match="does not exist"):
        train_generator(_config(tmp_path / "absent", tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_caption_over_77_tokens(tiny_world, tmp_path):
    image = tiny_world / "train" / "images" / "000000.png"
    _write_metadata(tmp_path / "data", [{"file_name": str(image), "text": "ball " * 80}])
    with pytest.raises(TrainingDataError, match="more than the text encoder's 77"):
        train_generator(_config(tmp_path / "data", tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_coco_captions_input(tiny_world, tmp_path):
    coco = {"images": [{"id": 1, "file_name": "train/images/000000.png"}],
            "annotations": [{"id": 1, "image_id": 1, "caption": "a red ball"}]}
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(coco))
    out = train_generator(_config(path, tmp_path / "run", image_root=str(tiny_world), steps=2, vae_steps=1,
                                  checkpoint_every=2))
    assert (out / "model_index.json").is_file()


@pytest.mark.parametrize("field, value", [("steps", 0), ("batch_size", -1), ("caption_dropout", 1.5)])
def test_bad_numbers(tiny_world, tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        train_generator(_config(tiny_world / "train", tmp_path / "run", **{field: value}))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("device", ["gpu0", "cuda"])
def test_unusable_device_refused_before_writing(tiny_world, tmp_path, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="device"):
        train_generator(_config(tiny_world / "train", tmp_path / "run", device=device))
    assert not (tmp_path / "run").exists()


def test_finetune_keeps_text_encoder_and_vae_frozen(tiny_world, tiny_pipeline_dir, tmp_path):
    out = train_generator(_config(tiny_world / "train", tmp_path / "ft", init=str(tiny_pipeline_dir), steps=3,
                                  checkpoint_every=3, ema=False))
    for part, changed in (("text_encoder", False), ("vae", False), ("unet", True)):
        name = "model.safetensors" if part == "text_encoder" else "diffusion_pytorch_model.safetensors"
        before, after = load_file(tiny_pipeline_dir / part / name), load_file(out / part / name)
        same = all(torch.equal(before[k], after[k]) for k in before)
        assert same != changed, part


def test_min_snr_weighting_only_downweights_nearly_clean_timesteps():
    from synthscene.models.configs import training_scheduler
    from synthscene.train.generator import _denoising_loss

    scheduler = training_scheduler()
    torch.manual_seed(0)
    prediction, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    timesteps = torch.tensor([900, 5])  # SNR << 5 and SNR >> 5
    plain = torch.nn.functional.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))
    for t, expected_weight in ((0, 1.0), (1, None)):
        weighted = _denoising_loss(prediction[t : t + 1], noise[t : t + 1], timesteps[t : t + 1], scheduler, 5.0)
        if expected_weight is not None:
            assert weighted == pytest.approx(plain[t].item())
        else:
            alpha_bar = scheduler.alphas_cumprod[5]
            assert weighted == pytest.approx(plain[t].item() * 5.0 / (alpha_bar / (1 - alpha_bar)).item(), rel=1e-4)
            assert weighted < plain[t]
    assert _denoising_loss(prediction, noise, timesteps, scheduler, None) == pytest.approx(plain.mean().item())


def test_box_crops_captioned_by_their_classes(small_world):
    from synthscene.train.image_captions import read_box_crops

    coco = small_world / "annotations" / "instances_train.json"
    truth = json.loads(coco.read_text())
    crops = read_box_crops(coco, classes=["ball", "leaf"], context=1.5, min_side=12)
    names = {c["id"]: c["name"] for c in truth["categories"]}
    wanted = [a for a in truth["annotations"] if names[a["category_id"]] in ("ball", "leaf") and not a["iscrowd"]]
    assert len(crops) == len(wanted)
    for crop in crops:
        left, top, side = crop.crop
        assert 12 <= side <= 32 and 0 <= left <= 32 - side and 0 <= top <= 32 - side
        assert crop.caption.startswith("a photograph of ")
        named = crop.caption.removeprefix("a photograph of ").replace(" and ", ", ").split(", ")
        assert named and set(named) <= {"ball", "leaf"} and len(set(named)) == len(named)
    whole = read_box_crops(coco, min_side=64)  # never larger than the image
    assert all(c.crop[2] == 32 and c.crop[:2] == (0, 0) for c in whole)
    with pytest.raises(TrainingDataError, match="no category kite"):
        read_box_crops(coco, classes=["kite"])


def test_finetune_on_crops_of_base_class_boxes(small_world, tiny_pipeline_dir, tmp_path):
    coco = small_world / "annotations" / "instances_train.json"
    out = train_generator(_config(coco, tmp_path / "ft", init=str(tiny_pipeline_dir), steps=2, checkpoint_every=2,
                                  ema=False, classes_from_annotations=True, classes=("ball", "box")))
    assert (out / "unet").is_dir()
    recorded = json.loads((tmp_path / "ft" / "training_config.json").read_text())
    assert recorded["config"]["classes"] == ["ball", "box"] and recorded["config"]["classes_from_annotations"]
    with pytest.raises(ValueError, match="need classes_from_annotations"):
        train_generator(_config(coco, tmp_path / "bad", init=str(tiny_pipeline_dir), classes=("ball",)))
    assert not (tmp_path / "bad").exists()


def test_mmdit_trains_resumes_exactly_and_loads_as_an_sd3_pipeline(tiny_world, tmp_path):
    """--architecture tiny-mmdit: SD3's classes, rectified flow, checkpoints that resume exactly,
    and a saved folder StableDiffusion3Pipeline.from_pretrained reads offline."""
    from diffusers import StableDiffusion3Pipeline

    config = dict(architecture="tiny-mmdit", steps=4, vae_steps=2, checkpoint_every=2)
    straight = train_generator(_config(tiny_world / "train", tmp_path / "straight", **config))
    train_generator(_config(tiny_world / "train", tmp_path / "resumed", **{**config, "steps": 2}))
    resumed = train_generator(_config(tiny_world / "train", tmp_path / "resumed", **config), resume=True)
    for part in ("transformer", "text_encoder", "text_encoder_3"):
        name = "diffusion_pytorch_model" if part == "transformer" else "model"
        a, b = (load_file(root / part / f"{name}.safetensors") for root in (straight, resumed))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")
    assert not list(straight.rglob("*.bin")), "weights must be safetensors"

    pipe = StableDiffusion3Pipeline.from_pretrained(straight, local_files_only=True)
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert pipe.text_encoder_3.config.num_layers == 0  # T5 token states without context mixing
    image = pipe("a red ball", num_inference_steps=2, guidance_scale=2.0, output_type="np", max_sequence_length=24,
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 16, 16, 3)
    assert load_pipeline(str(straight)).transformer is not None  # synthscene's loader picks SD3 by itself


def test_init_from_a_family_the_trainer_cannot_fine_tune_is_refused(tiny_world, tmp_path):
    from tests.tiny_models import tiny_pipeline

    tiny_pipeline("flux").save_pretrained(tmp_path / "flux")
    with pytest.raises(ValueError, match="train-generator --init runs on SD 1.x / 2.x / SD3 pipelines; this model is FLUX"):
        train_generator(_config(tiny_world / "train", tmp_path / "run", init=str(tmp_path / "flux")))
    assert not (tmp_path / "run").exists()


def test_finetuning_trains_and_samples_on_the_models_own_noise_schedule(tiny_world, tmp_path):
    """A real SD uses scaled-linear betas (the embedded model cosine): a fine-tune keeps them."""
    from tests.tiny_models import tiny_pipeline

    tiny_pipeline("sd1").save_pretrained(tmp_path / "sd1")
    out = train_generator(_config(tiny_world / "train", tmp_path / "ft", init=str(tmp_path / "sd1"), steps=2,
                                  checkpoint_every=2, ema=False))
    config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert config["beta_schedule"] == "scaled_linear" and config["_class_name"] == "DDIMScheduler"
    saved = json.loads((tmp_path / "ft" / "checkpoints" / "step-0000002" / "scheduler" / "scheduler_config.json")
                       .read_text())
    assert saved["beta_schedule"] == "scaled_linear"  # a resumed run trains on it too
