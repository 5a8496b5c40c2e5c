"""The run engine: spec -> manifest (written, then read back) -> shards on a backend -> card."""

from synthscene.engine.run import BACKENDS, Execution, RunSummary, run_spec

__all__ = ["BACKENDS", "Execution", "RunSummary", "run_spec"]
