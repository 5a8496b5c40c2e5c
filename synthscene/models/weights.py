"""Reading weight files a user hands us: safetensors, or torch files of plain tensors only.

Every failure is one ``WeightsError`` (a ``ValueError``) whose message names the file and
says what is wrong: a pickle with Python objects in it (refused, never unpickled), a file
that is not a weights file at all, or weights of another architecture.
"""

from __future__ import annotations

import pickle
from pathlib import Path


class WeightsError(ValueError):
    pass


def read_state_dict(path: str | Path) -> dict:
    """The tensors of ``path`` (``.safetensors``, else ``torch.load(weights_only=True)``)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as err:
            raise WeightsError(f"{path} is not a valid safetensors file ({err})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(f"{path} holds Python objects besides tensors, which are not loaded (they could run "
                           "code); save its state_dict with safetensors.torch.save_file and pass that") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsError(f"{path} is not a safetensors or torch weights file ({message})") from None


def load_into(module, state, path: str | Path, what: str) -> None:
    """``module.load_state_dict(state)``, or one line saying how the weights of ``path``
    differ from ``what`` (keys missing, unexpected, of another shape)."""
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise WeightsError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or reshaped:
        parts = [f"{len(keys)} {kind} (e.g. {keys[0]})" for kind, keys in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)) if keys]
        raise WeightsError(f"{path} holds weights of another architecture than {what}: tensors "
                           + ", ".join(parts))
    module.load_state_dict(state)
