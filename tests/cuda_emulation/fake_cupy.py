"""A stand-in for the parts of CuPy that pywino3d's CUDA backend uses.

Arrays are NumPy arrays of a subclass whose module starts with "cupy", so the
dispatcher treats them as device arrays; RawModule functions launch the CUDA
kernels compiled for the host (emulate.cpp).  Installed as ``cupy`` in
``sys.modules`` by tests/test_cuda_emulation.py, it lets CPU-only CI run
``pywino3d/_cuda_backend.py`` itself: plans, argument marshalling and
widths, block loops, both product paths and the public API's device rules.
"""
import contextlib
import ctypes
import types

import numpy as np


class ndarray(np.ndarray):
    """A 'device' array (host memory)."""

    @property
    def device(self):
        return cuda.Device(0)

    def get(self):
        return np.array(self).view(np.ndarray)


ndarray.__module__ = "cupy._core.core"


def _dev(a):
    return a.view(ndarray) if isinstance(a, np.ndarray) else a


def asarray(a, dtype=None):
    return _dev(np.asarray(a, dtype=dtype))


def ascontiguousarray(a):
    return _dev(np.ascontiguousarray(a))


def empty(shape, dtype=np.float64):
    return _dev(np.empty(shape, dtype))


def zeros(shape, dtype=np.float64):
    return _dev(np.zeros(shape, dtype))


def arange(*args, dtype=None):
    return _dev(np.arange(*args, dtype=dtype))


def matmul(a, b, out=None):
    return _dev(np.matmul(a, b, out=out))


def asnumpy(a):
    return np.asarray(a).view(np.ndarray)


float32, float64, int32, int64 = np.float32, np.float64, np.int32, np.int64


class _Device:
    def __init__(self, i=0):
        self.id = int(i)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass


class _Event:
    def record(self):
        pass

    def synchronize(self):
        pass


cuda = types.SimpleNamespace(
    Device=_Device,
    Event=_Event,
    is_available=lambda: True,
    get_elapsed_time=lambda a, b: 1.0,
    runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {"name": b"host emulator"}),
)

#: set by the test: the ctypes library built from emulate.cpp
LIB = None


def _marshal(a, keep):
    if isinstance(a, np.void):  # a struct passed by value: the entry point takes its address
        buf = np.array(a)
        keep.append(buf)
        return buf.ctypes.data_as(ctypes.c_void_p)
    if isinstance(a, np.ndarray):
        return a.ctypes.data_as(ctypes.c_void_p)
    if isinstance(a, np.int64):
        return ctypes.c_longlong(int(a))
    if isinstance(a, np.int32):
        return ctypes.c_int(int(a))
    raise TypeError(f"kernel argument of type {type(a).__name__}: pass numpy fixed-width scalars or arrays")


class _Function:
    def __init__(self, name):
        base = name.split("<")[0]
        targs = name[name.index("<") + 1:-1].split(",")
        if targs[0] != "float" or (base not in ("sparse_gemm", "input_adjoint_gather")
                                   and targs[1] not in ("4", "6")):
            raise NotImplementedError(f"the emulator builds float kernels with AMAX 4 and 6, not {name}")
        suffix = f"_{targs[1]}" if base not in ("sparse_gemm", "input_adjoint_gather") else ""
        self.fn = getattr(LIB, "emu_" + base + suffix)
        self.base = base

    def __call__(self, grid, block, args):
        keep = []
        cargs = [_marshal(a, keep) for a in args]
        if self.base == "sparse_gemm":
            cargs.insert(0, ctypes.c_longlong(grid[2]))
        self.fn(*cargs)


class RawModule:
    def __init__(self, code, options=(), name_expressions=()):
        self.names = set(name_expressions)

    def compile(self):
        return self

    def get_function(self, name):
        assert name in self.names, f"{name} was not registered as a name expression"
        return _Function(name)


@contextlib.contextmanager
def installed(monkeypatch, lib):
    """Install this module as ``cupy`` for the duration of a test."""
    import sys

    global LIB
    LIB = lib
    mod = sys.modules[__name__]
    monkeypatch.setitem(sys.modules, "cupy", mod)
    yield mod
