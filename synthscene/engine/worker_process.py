"""How a worker process computes: its thread pools and how it holds memory.

Both backends call these before a method's ``Worker`` loads its model: the local loop in
this process, each Ray actor in its own.
"""

from __future__ import annotations

import ctypes
import platform

# mallopt parameters from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX): blocks above
# it are always mapped afresh, whatever is asked
MMAP_THRESHOLD = 32 << 20
# free memory at the top of the heap that is kept rather than handed back to the kernel
TRIM_THRESHOLD = 1 << 30


def limit_threads(threads: int):
    """Make this process compute with ``threads`` threads: torch's pool, OpenCV's (GrabCut,
    colour conversions) and the BLAS / OpenMP pools numpy and scipy use. Returns a function
    that restores what was there (a library call must not keep a process's settings)."""
    import cv2
    import torch
    from threadpoolctl import threadpool_limits

    saved = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    limits = threadpool_limits(threads)

    def restore() -> None:
        limits.restore_original_limits()
        torch.set_num_threads(saved[0])
        cv2.setNumThreads(saved[1])

    return restore


def keep_freed_memory() -> bool:
    """Let this process reuse the memory torch frees between denoising steps instead of
    returning it to the kernel and faulting it back in on the next step.

    Every UNet call allocates and frees the same activations. glibc's malloc adapts its
    thresholds to that pattern on its own, but how well depends on the process's history: in
    one process it settles, in the next (a Ray actor, say) it keeps mapping and unmapping, and
    the same shard costs 5-10 % more CPU time, spent on page faults
    (``benchmarks/worker_memory.py``). Fixed thresholds make every process behave alike. The
    cost is that a process keeps up to ``TRIM_THRESHOLD`` of freed heap; a worker's peak comes
    back every step anyway. glibc only (a no-op elsewhere); returns whether it was applied.
    Settings of the whole process, and not restored: the worker's, for its life.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    # both, or neither: setting one turns off glibc's adaptation of the other
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
