"""Scheduler names accepted in specs and on the command line."""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from synthscene.spec import SCHEDULERS

SCHEDULER_CLASSES = {
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "pndm": PNDMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_ancestral": EulerAncestralDiscreteScheduler,
    "dpm_solver": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
    "flow_match_euler": FlowMatchEulerDiscreteScheduler,
}
assert tuple(SCHEDULER_CLASSES) == SCHEDULERS, "spec.SCHEDULERS and the classes here must name the same schedulers"


def set_scheduler(pipe, name: str) -> None:
    """Swap the pipeline's scheduler for ``name``, keeping the model's noise schedule."""
    if name not in SCHEDULER_CLASSES:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_CLASSES)}")
    if not isinstance(pipe.scheduler, SCHEDULER_CLASSES[name]):
        pipe.scheduler = SCHEDULER_CLASSES[name].from_config(pipe.scheduler.config)
