"""Methods: thin modules on the shared capture / label / store code.

Every method module exposes the same four names, which the run engine
(``synthscene.engine``) uses and nothing else:

- ``Task``: one manifest row (a frozen dataclass with ``to_json`` / ``from_json``);
- ``plan(spec) -> list[Task]``: everything random about a sample except the denoising itself;
- ``check(spec, tasks)``: refuse a spec or task the model cannot make, from the model's
  configs and tokenizer alone, before anything is written;
- ``Worker(spec, device)``: loads and checks the model once; ``worker(tasks) -> list[Sample]``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# method name (the spec's ``method:``) -> module; imported only when used
METHODS = {
    "text2labels": "synthscene.methods.text2labels",
    "mosaic": "synthscene.methods.mosaic",
    "grounding": "synthscene.methods.grounding",
    "restyle": "synthscene.methods.restyle",
    "layout": "synthscene.methods.layout",
}


def method_module(name: str) -> ModuleType:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])
