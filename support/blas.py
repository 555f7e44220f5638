"""OpenBLAS thread control: numpy's BLAS on one thread for code made of many small matmuls."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

_OPENBLAS_THREAD_SETTERS = ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads")
_OPENBLAS_THREAD_GETTERS = ("openblas_get_num_threads", "scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads")


@cache
def _openblas() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """(get, set) of the thread count of the OpenBLAS loaded into this process (numpy's),
    or None where there is none (another BLAS, or no /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1].lower()})
    except OSError:
        return None
    for path in paths:
        lib = ctypes.CDLL(path)
        setter = next((getattr(lib, n) for n in _OPENBLAS_THREAD_SETTERS if hasattr(lib, n)), None)
        getter = next((getattr(lib, n) for n in _OPENBLAS_THREAD_GETTERS if hasattr(lib, n)), None)
        if setter is not None and getter is not None:
            setter.argtypes = [ctypes.c_int]
            return getter, setter
    return None


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run OpenBLAS on one thread inside the block, then restore its thread count.

    The simulator's matmuls are tiles (they fit an on-chip buffer), too small for
    OpenBLAS's threads to pay off; worse, its idle threads spin, and when the cores are
    shared with other processes each call can wait milliseconds for a descheduled thread
    (measured: 11 ms instead of 0.04 ms for a 1936x16 @ 16x32 tile on 2 busy cores)."""
    blas = _openblas()
    if blas is None:
        yield
        return
    get, set_ = blas
    before = get()
    set_(1)
    try:
        yield
    finally:
        set_(before)
