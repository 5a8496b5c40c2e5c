"""What a pipeline is, from its configs alone."""

import pytest

from synthscene.models.info import ModelNotFoundError, load_tokenizer, model_fingerprint, model_info, pipeline_info


def test_config_facts_match_the_loaded_pipeline(tiny_pipeline_dir):
    from synthscene.models.load import load_pipeline

    info = model_info(str(tiny_pipeline_dir))
    assert info == pipeline_info(load_pipeline(str(tiny_pipeline_dir)))
    assert info.vae_factor == 1 and info.latent_size == 16 and not info.extra_conditioning  # ARCHITECTURES["tiny"]
    embedded = model_info("embedded")
    assert embedded.pipeline_class == "StableDiffusionPipeline" and embedded.train_timesteps == 1000
    assert load_tokenizer("embedded").model_max_length == 77


def test_fingerprint_hashes_the_denoiser_weights(tiny_pipeline_dir, tmp_path):
    import shutil

    first = model_fingerprint(str(tiny_pipeline_dir))
    assert first == model_fingerprint(str(tiny_pipeline_dir)) and first["unet_sha256_prefix"]
    copy = tmp_path / "copy"
    shutil.copytree(tiny_pipeline_dir, copy)
    weights = next((copy / "unet").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of the last weight
    weights.write_bytes(bytes(data))
    assert model_fingerprint(str(copy))["unet_sha256_prefix"] != first["unet_sha256_prefix"]


def test_missing_models_say_what_was_tried(tmp_path):
    with pytest.raises(ModelNotFoundError, match="tried local folder"):
        model_info(str(tmp_path / "nothing-here"))
    with pytest.raises(ModelNotFoundError, match="no model_index.json"):
        model_info(str(tmp_path))
