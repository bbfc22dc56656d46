"""Process-level tuning for long CPU jobs (the CLI and the benchmarks turn it on).

Large tensors (a batch of 32 RGB 224² images is 19 MB in float32) are above glibc malloc's
mmap threshold, so by default every one is mapped fresh and each of its 4 KiB pages is
faulted in and zeroed again on first touch: 12 000-28 000 page faults per call of an
ImageNet-C corruption on such a batch, 20-35% of its time on a 2-core x86 VM
(``benchmarks/corruptions.py``). :func:`keep_freed_memory` makes malloc keep freed memory for
reuse instead. It is process-wide and keeps the process's resident memory near its peak, so
the library never calls it on import: applications opt in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc refuses mmap thresholds above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit systems)
_MAX_MMAP_THRESHOLD = 32 * 1024 * 1024


def keep_freed_memory(trim_threshold_bytes: int = 1 << 30) -> bool:
    """Serve allocations up to 32 MiB from malloc's heap and return freed memory to the OS only
    when more than ``trim_threshold_bytes`` sits free at its top, so repeated batches reuse pages
    that are already mapped. Returns True if applied (glibc), False elsewhere (a no-op there)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold_bytes)) == 1
