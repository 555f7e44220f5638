"""OpenBLAS thread control: every BLAS of the process on one thread for code made of many
small matmuls, or that splits its matmuls over threads itself."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

import scipy.linalg.cython_blas  # noqa: F401 - loaded now so that its OpenBLAS is found below

_OPENBLAS_THREAD_SETTERS = ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads")
_OPENBLAS_THREAD_GETTERS = ("openblas_get_num_threads", "scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads")


@cache
def _openblas() -> tuple[tuple[Callable[[], int], Callable[[int], None]], ...]:
    """(get, set) of the thread count of each OpenBLAS loaded into this process: numpy's,
    and scipy's (which numba's np.dot calls); none where there is no /proc/self/maps."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1].lower()})
    except OSError:
        return ()
    found = []
    for path in paths:
        lib = ctypes.CDLL(path)
        setter = next((getattr(lib, n) for n in _OPENBLAS_THREAD_SETTERS if hasattr(lib, n)), None)
        getter = next((getattr(lib, n) for n in _OPENBLAS_THREAD_GETTERS if hasattr(lib, n)), None)
        if setter is not None and getter is not None:
            setter.argtypes = [ctypes.c_int]
            found.append((getter, setter))
    return tuple(found)


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run every OpenBLAS on one thread inside the block, then restore their thread counts.

    The simulator's matmuls are tiles (they fit an on-chip buffer): too small for
    OpenBLAS's threads to pay off, so its kernels split a tile's rows over numba's threads
    themselves, each calling BLAS on one thread. OpenBLAS's idle threads spin, and when
    the cores are shared with other processes each call can wait milliseconds for a
    descheduled thread (measured: 11 ms instead of 0.04 ms for a 1936x16 @ 16x32 tile on
    2 busy cores); next to numba's threads they made the simulator 18x slower."""
    libraries = _openblas()
    before = [get() for get, _ in libraries]
    for _, set_ in libraries:
        set_(1)
    try:
        yield
    finally:
        for (_, set_), count in zip(libraries, before):
            set_(count)
