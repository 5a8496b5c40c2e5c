"""Worker-process settings: compute threads, and memory kept between denoising steps."""

import json
import platform
import subprocess
import sys

import pytest

from synthscene.engine.worker_process import limit_threads

# Allocates and frees the same blocks again and again, as every UNet call does with its
# activations (blocks below glibc's 32 MiB mmap ceiling), and prints the minor page faults of each
# round after the first.
_STEADY_STATE = """
import json, resource, sys
import torch
from synthscene.engine.worker_process import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
sizes = [(64 << 10) * k for k in (4, 96, 1, 24, 120, 8, 64, 48)]  # float32 elements: 256 KiB to 30 MiB
faults = []
for round_ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(n) for n in sizes]
    blocks = [b * 2 for b in blocks]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
pages = 2 * sum(sizes) * 4 // resource.getpagesize()  # each round's blocks and their doubles
print(json.dumps({"applied": applied, "faults": faults[1:], "pages_per_round": pages}))
"""


def _steady_state_faults(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _STEADY_STATE, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory sets glibc's malloc thresholds")
def test_kept_memory_is_reused_without_page_faults():
    kept = _steady_state_faults("keep")
    assert kept["applied"] is True
    # once the heap holds a round's blocks, the next five rounds mostly reuse them (measured: 4,100
    # to 9,000 stray pages in all), where glibc's adaptive thresholds, starting from scratch in a
    # fresh process, faulted 49,000 to 233,000 pages, one to five rounds' worth
    assert sum(kept["faults"]) < 0.5 * kept["pages_per_round"], kept


def test_limit_threads_sets_and_restores_every_pool():
    import cv2
    import torch
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads(), cv2.getNumThreads()
    restore = limit_threads(1)
    try:
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        restore()
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before
