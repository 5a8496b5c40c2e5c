"""Load a text-to-image pipeline (SD 1.x / 2.x, SDXL, SD3, FLUX): the embedded shapes model,
a local folder or a hub id.

All three go through ``from_pretrained`` (the class named in model_index.json); only where
the files come from differs. Weights load from safetensors only (``use_safetensors=True``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import warnings
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline

from synthscene.models.info import (
    EMBEDDED_MMDIT_DIR,
    EMBEDDED_MMDIT_NAME,
    EMBEDDED_MODEL_DIR,
    EMBEDDED_MODEL_NAME,
    ModelNotFoundError,
    check_pipeline_folder,
    looks_like_hub_id,
    resolve_model,
)

__all__ = ["EMBEDDED_MMDIT_DIR", "EMBEDDED_MMDIT_NAME", "EMBEDDED_MODEL_DIR", "EMBEDDED_MODEL_NAME", "ModelNotFoundError",
           "check_device", "load_pipeline"]

def check_device(device: str | torch.device) -> torch.device:
    """The torch device for ``device`` ("cpu", "cuda", "cuda:1", "mps"), refused with one clear
    error when it is not a device name or this machine's torch cannot use it."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {str(device)!r} is not a torch device: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: torch sees no CUDA device on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r}: torch sees no MPS device on this machine")
    return device


def load_pipeline(model: str = EMBEDDED_MODEL_NAME, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu") -> DiffusionPipeline:
    """Load a text-to-image pipeline.

    Args:
        model: "embedded" (the shapes UNet), "embedded-mmdit" (the shapes SD3 transformer), a
            folder written by ``save_pretrained`` (model_index.json),
            or a hub id such as "stable-diffusion-v1-5/stable-diffusion-v1-5".
    Raises:
        ModelNotFoundError: saying which folder and hub id were tried and why each failed.
        ValueError: a device this machine cannot use (checked before loading).
    """
    device = check_device(device)
    source, is_local = resolve_model(model)
    if is_local:
        check_pipeline_folder(model, Path(source))
        pipeline_class = StableDiffusionPipeline if _is_sd(Path(source)) else DiffusionPipeline
        with library_messages_held():
            pipe = pipeline_class.from_pretrained(source, local_files_only=True, use_safetensors=True,
                                                  low_cpu_mem_usage=_HAS_ACCELERATE)
    else:
        if not looks_like_hub_id(model):
            raise ModelNotFoundError(
                f"model {model!r}: tried local folder {Path(model).resolve()} (does not exist); "
                "it is not a hub id of the form owner/name either"
            )
        try:
            with library_messages_held():
                pipe = DiffusionPipeline.from_pretrained(model, use_safetensors=True, low_cpu_mem_usage=_HAS_ACCELERATE)
        except Exception as err:  # diffusers raises OSError, HfHubHTTPError, ValueError...
            raise ModelNotFoundError(
                f"model {model!r}: no local folder of that name ({Path(model).resolve()}), "
                f"and loading it as a hub id failed: {err}"
            ) from err
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    denoiser = getattr(pipe, "transformer", None) or pipe.unet
    if dtype != denoiser.dtype:  # cast after loading: the keyword moved (torch_dtype -> dtype) across versions
        pipe.to(dtype=dtype)
    return pipe


# without accelerate, diffusers falls back to plain loading anyway, after a warning that says so
_HAS_ACCELERATE = importlib.util.find_spec("accelerate") is not None


class _HeldRecords(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def library_messages_held():
    """Hold diffusers' and transformers' log lines and Python warnings while a model loads,
    and hide their loading bars: shown once it has loaded, dropped if it failed, so a
    failure is our one-line error and not a page of library output above it."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    roots = [diffusers_logging.get_logger("diffusers"), transformers_logging.get_logger("transformers")]
    saved = [(root, root.handlers[:]) for root in roots]
    held = _HeldRecords()
    for root in roots:
        root.handlers = [held]
    bars = [module for module in (diffusers_logging, transformers_logging) if module.is_progress_bar_enabled()]
    for module in bars:
        module.disable_progress_bar()
    with warnings.catch_warnings(record=True) as caught:
        try:
            yield
        finally:
            for root, handlers in saved:
                root.handlers = handlers
            for module in bars:
                module.enable_progress_bar()
    # loaded: say what the libraries had to say
    for record in held.records:
        root = next(r for r in roots if record.name.split(".")[0] == r.name)
        for handler in root.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)
    for warning in caught:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


def _is_sd(folder: Path) -> bool:
    index = json.loads((folder / "model_index.json").read_text())
    return index.get("_class_name") == "StableDiffusionPipeline"
