"""What a pipeline is, read from its config files alone: no torch, no weights.

Planning and checking a run (prompt lengths, canvas geometry, recipe fit) happen before
anything is written and, on a cluster, on a driver that may have no GPU; they need the
model's configs and tokenizer, never its weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

EMBEDDED_MODEL_NAME = "embedded"
EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapes_model"
# the same world on an SD3-architecture transformer (train-generator --architecture shapes-mmdit)
EMBEDDED_MMDIT_NAME = "embedded-mmdit"
EMBEDDED_MMDIT_DIR = EMBEDDED_MODEL_DIR.parent / "shapes_mmdit"
EMBEDDED_MODELS = {EMBEDDED_MODEL_NAME: EMBEDDED_MODEL_DIR, EMBEDDED_MMDIT_NAME: EMBEDDED_MMDIT_DIR}
# trained beside the embedded model (issue: layouts): a train-controlnet run's output and a
# train-parts output, each named "embedded" where a spec asks for a ControlNet or part model
EMBEDDED_CONTROLNET_DIR = EMBEDDED_MODEL_DIR.parent / "shapes_controlnet"
EMBEDDED_PARTS_DIR = EMBEDDED_MODEL_DIR.parent / "shapes_parts"


def resolve_embedded(value: str, folder: Path) -> str:
    """``value``, or ``folder`` when it is "embedded"."""
    return str(folder) if value == EMBEDDED_MODEL_NAME else value


class ModelNotFoundError(FileNotFoundError):
    """No pipeline could be found; the message lists what was tried."""


def resolve_model(model: str) -> tuple[str, bool]:
    """(path or hub id, is_local) for a ``--model`` value."""
    if model in EMBEDDED_MODELS:
        return str(EMBEDDED_MODELS[model]), True
    path = Path(model).expanduser()
    if path.exists():
        return str(path), True
    return model, False


def check_pipeline_folder(model: str, folder: Path) -> None:
    """Refuse a local folder that holds no pipeline, saying what was expected there."""
    if (folder / "model_index.json").is_file():
        return
    if model in EMBEDDED_MODELS:
        raise ModelNotFoundError(f"model {model!r}: the embedded pipeline is missing from {folder} (a partial "
                                 "install or checkout?); reinstall synthscene, or train one with synthscene "
                                 "train-generator and pass its model folder")
    raise ModelNotFoundError(f"model {model!r}: tried local folder {folder}, which has no model_index.json "
                             "(expected a folder written by save_pretrained)")


def looks_like_hub_id(model: str) -> bool:
    return model.count("/") == 1 and not model.startswith((".", "/", "~"))


@lru_cache(maxsize=8)
def model_folder(model: str) -> Path:
    """The local folder of a pipeline: the embedded model, a ``save_pretrained`` folder, or
    the hub cache's snapshot of a hub id's configs and tokenizers (no weights fetched)."""
    source, is_local = resolve_model(model)
    if is_local:
        check_pipeline_folder(model, Path(source))
        return Path(source)
    if not looks_like_hub_id(model):
        raise ModelNotFoundError(f"model {model!r}: tried local folder {Path(model).resolve()} (does not exist); "
                                 "it is not a hub id of the form owner/name either")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, allow_patterns=["*.json", "*.txt", "tokenizer*/*"]))
    except Exception as err:  # offline, unknown repo, gated...
        raise ModelNotFoundError(f"model {model!r}: no local folder of that name ({Path(model).resolve()}), "
                                 f"and reading its configs from the hub failed: {err}") from err


def read_config(model: str, component: str) -> dict:
    """``component/config.json`` (or ``scheduler_config.json``) of a pipeline."""
    folder = model_folder(model) / component
    for name in ("config.json", "scheduler_config.json"):
        if (folder / name).is_file():
            return json.loads((folder / name).read_text())
    raise ModelNotFoundError(f"model {model!r} has no {component}/config.json")


@dataclass(frozen=True)
class ModelInfo:
    """The facts about a pipeline that planning and checks need."""

    pipeline_class: str
    vae_factor: int  # image pixels per latent pixel
    latent_size: int  # the denoiser's native latent side
    unet_levels: int  # the UNet's resolutions (1 for a transformer: one token grid)
    extra_conditioning: bool  # pooled text / time embeddings beside the token states (SDXL, SD3, FLUX)
    train_timesteps: int
    text_dim: int | None = None  # width of the (first) text encoder's token states
    unet_in_channels: int = 4  # 9: an inpainting UNet (latents + mask + masked image)
    family: str = "sd"  # "sd", "sdxl", "sd3", "flux" (``models.text_layout.family_name``)
    patch_size: int = 1  # latent pixels per token side (SD3: its patch; FLUX: 2, its packing)
    flow_matching: bool = False  # trained with flow matching (SD3, FLUX): its scheduler is a FlowMatch one
    # the largest latent side the denoiser takes (SD3: what its position embedding covers); None: any
    max_latent_size: int | None = None

    @property
    def latent_multiple(self) -> int:
        """What every latent side must divide by: the UNet's downsampling or the token patch."""
        return 2 ** (self.unet_levels - 1) * self.patch_size

    @property
    def joint_attention(self) -> bool:
        return self.family in ("sd3", "flux")


FAMILY_NAMES = {"sd": "SD 1.x / 2.x", "sdxl": "SDXL", "sd3": "SD3", "flux": "FLUX"}


def require_family(info: ModelInfo, what: str, families: tuple[str, ...] = ("sd",)) -> None:
    """Refuse a model whose family ``what`` (a method) does not run on, naming both."""
    if info.family not in families:
        allowed = " / ".join(FAMILY_NAMES[f] for f in families)
        raise ValueError(f"{what} runs on {allowed} pipelines; this model is {FAMILY_NAMES[info.family]} "
                         f"({info.pipeline_class})")


# FLUX's transformer config has no sample size; its pipeline's default is 1024 px = 128 latents
_FLUX_LATENT_SIZE = 128


@lru_cache(maxsize=8)
def model_info(model: str) -> ModelInfo:
    from synthscene.models.text_layout import family_name

    index = json.loads((model_folder(model) / "model_index.json").read_text())
    denoiser_folder = "transformer" if "transformer" in index else "unet"
    denoiser, vae, scheduler = (read_config(model, c) for c in (denoiser_folder, "vae", "scheduler"))
    family = family_name(denoiser.get("_class_name", "UNet2DConditionModel"), denoiser)
    return _info(index.get("_class_name", ""), family, denoiser, vae, scheduler, _text_width(model))


def _info(pipeline_class: str, family: str, denoiser: dict, vae: dict, scheduler: dict,
          text_dim: int | None) -> ModelInfo:
    transformer = family in ("sd3", "flux")
    # SD3Transformer2DModel's defaults where a config leaves them out: 2x2 patches, 96 positions
    patch = int(denoiser.get("patch_size", 2 if family == "sd3" else 1)) * (2 if family == "flux" else 1)
    max_tokens = denoiser.get("pos_embed_max_size", 96) if family == "sd3" else None
    return ModelInfo(
        pipeline_class=pipeline_class,
        vae_factor=2 ** (len(vae["block_out_channels"]) - 1),
        latent_size=int(denoiser.get("sample_size", _FLUX_LATENT_SIZE)),
        unet_levels=1 if transformer else len(denoiser["block_out_channels"]),
        extra_conditioning=family != "sd" or denoiser.get("addition_embed_type") is not None,
        train_timesteps=int(scheduler.get("num_train_timesteps", 1000)),
        text_dim=text_dim,
        unet_in_channels=int(denoiser.get("in_channels", 4)),
        family=family,
        patch_size=patch,
        flow_matching=str(scheduler.get("_class_name", "")).startswith("FlowMatch"),
        max_latent_size=int(max_tokens) * patch if max_tokens else None,
    )


def _text_width(model: str) -> int | None:
    try:
        return int(read_config(model, "text_encoder")["hidden_size"])
    except (ModelNotFoundError, KeyError):
        return None


@lru_cache(maxsize=8)
def load_tokenizer(model: str, component: str = "tokenizer"):
    """One of the pipeline's tokenizers, as the pipeline itself would load it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_folder(model) / component, local_files_only=True)


@lru_cache(maxsize=8)
def model_text_layout(model: str):
    """Where prompt words sit in the text axis the model's attention sees
    (``models.text_layout.TextLayout``), from its configs and tokenizers."""
    from synthscene.models.text_layout import text_layout

    folder = model_folder(model)
    tokenizers = {name: load_tokenizer(model, name) for name in ("tokenizer", "tokenizer_2", "tokenizer_3")
                  if (folder / name).is_dir()}
    return text_layout(model_info(model).family, tokenizers)


def model_fingerprint(model: str) -> dict:
    """What identifies the model a dataset was made with, from its files: name, pipeline
    class and a hash of the denoiser's weights file (its header and first 16 MiB, and
    its size: cheap for multi-GB files, different for any retrained model)."""
    folder = model_folder(model)
    info = model_info(model)
    digest = hashlib.sha256()
    denoiser = folder / ("transformer" if (folder / "transformer").is_dir() else "unet")
    weights = sorted(denoiser.glob("*.safetensors")) if denoiser.is_dir() else []
    for path in weights:
        digest.update(path.name.encode())
        digest.update(str(path.stat().st_size).encode())
        with open(path, "rb") as f:
            digest.update(f.read(16 << 20))
    return {"name_or_path": model if model in EMBEDDED_MODELS else str(resolve_model(model)[0]),
            "class": info.pipeline_class,
            "unet_sha256_prefix": digest.hexdigest()[:16] if weights else None}


def pipeline_info(pipe) -> ModelInfo:
    """``ModelInfo`` of a pipeline already in memory (benchmarks and tests that build one)."""
    from synthscene.models.text_layout import family_name

    denoiser = getattr(pipe, "transformer", None) or pipe.unet
    config = dict(denoiser.config)
    family = family_name(type(denoiser).__name__, config)
    text_dim = int(pipe.text_encoder.config.hidden_size) if pipe.text_encoder is not None else None
    scheduler = {**pipe.scheduler.config, "_class_name": type(pipe.scheduler).__name__}
    return _info(type(pipe).__name__, family, config, dict(pipe.vae.config), scheduler, text_dim)
