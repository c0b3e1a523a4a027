"""Keep freed memory in the process during CPU training (glibc's malloc settings).

A CPU training step allocates and frees the same tensors every iteration: the network's activations, and on the
Medal S side N per-prompt maps at every deep-supervision scale, N spatial prompts and their targets (tens of MB
each). glibc serves big blocks with fresh ``mmap`` pages and returns them on free (its dynamic mmap threshold stops
at 32 MB), and trims the heap top, so every step page-faults the same megabytes in again. Raising the mmap threshold
and never trimming keeps freed blocks for reuse: what the PyTorch CPU tuning guide gets from preloading
jemalloc/tcmalloc, without a library to install. Measured in ``benchmarks/train_step.py`` (README "Benchmarks",
docs/decisions.md "The CPU training step").

The price is resident memory: the process, and every augmentation worker forked after the call, keeps its peak
instead of returning freed blocks to the system. ``nnUNet_medals_keep_freed_memory=0`` turns it off; other C
libraries than glibc are left as they are.
"""
from __future__ import annotations

import ctypes
import os

#: opt-out environment variable (``0`` = leave malloc as it is)
ENV = "nnUNet_medals_keep_freed_memory"

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: blocks up to this size come from the heap and are reused after free; glibc up to 2.34 refuses more than
#: :data:`MMAP_THRESHOLD_FALLBACK` (half its 64 MiB heap size on 64-bit systems)
MMAP_THRESHOLD = 1 << 30
MMAP_THRESHOLD_FALLBACK = 32 << 20
#: never trim the heap top back to the system (mallopt takes an int)
TRIM_THRESHOLD = (1 << 31) - 1
#: grow the heap in steps of this size
TOP_PAD = 64 << 20


#: malloc settings a user may have made through the environment; they are respected (nothing is changed)
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def _libc():
    """glibc's handle, or None (another C library: musl and macOS have no such settings)."""
    try:
        libc = ctypes.CDLL(None)  # the running program's own symbols, libc's included
        libc.gnu_get_libc_version
        return libc
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no handle for the program itself
        return None


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed blocks for reuse (see the module docstring).

    Returns whether the settings were applied: False with ``nnUNet_medals_keep_freed_memory=0``, when the user set
    malloc through the environment (:data:`USER_SETTINGS`), where the C library is not glibc, or where glibc refused
    a setting.
    """
    if os.environ.get(ENV, "1").strip() == "0" or any(os.environ.get(name) for name in USER_SETTINGS):
        return False
    libc = _libc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    threshold = (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                 or mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_FALLBACK) == 1)
    if not threshold:
        # the trim setting alone would freeze the mmap threshold at its 128 kB start (a step took 2.5x as long)
        return False
    trim = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    pad = mallopt(_M_TOP_PAD, TOP_PAD) == 1
    return trim and pad
