"""A stand-in for the parts of CuPy that pywino3d's CUDA backend uses.

Arrays are NumPy arrays of a subclass whose module starts with "cupy", so the
dispatcher treats them as device arrays; RawModule functions launch the CUDA
kernels compiled for the host (emulate.cpp).  Installed as ``cupy`` in
``sys.modules`` by tests/test_cuda_emulation.py, it lets CPU-only CI run
``pywino3d/_backends/cuda/backend.py`` itself: plans, argument marshalling and
widths, launch sizes, block loops, both product paths, the public API's
device rules and the device a call runs on.

What a GPU would do and the stand-in does too:

* launches: the kernel runs with the grid and block sizes it was given
  (too few threads leave outputs unwritten; a block above the kernel's
  ``__launch_bounds__`` or above 1024 threads, or an empty grid, fails);
* memory: ``empty`` is filled with NaN (floats) or a junk pattern, so an
  output element no thread wrote shows;
* devices: every array records the device current when it was made; a
  launch fails when an argument lives on another device than the current
  one, or when the module was compiled for another device;
* timing: events record the host clock, so ``product="auto"`` measures;
* thread order: the launches shuffle blocks and threads with a seed
  (``SEED``), so a result that depends on the order changes with it.
"""
import contextlib
import ctypes
import itertools
import time
import types

import numpy as np

#: The current device (``cuda.Device(i)`` as a context manager sets it).
_current = [0]
#: Number of emulated devices.
DEVICES = 2
#: Seed of the launch order; each launch draws the next one from it.
SEED = 0
_launches = itertools.count()
#: Names of the kernels launched, in order (cleared by ``installed``).
LAUNCHED = []


class ndarray(np.ndarray):
    """A 'device' array (host memory) that knows its device."""

    def __array_finalize__(self, obj):
        self._device_id = getattr(obj, "_device_id", _current[0])

    @property
    def device(self):
        return cuda.Device(self._device_id)

    def get(self):
        return np.array(self).view(np.ndarray)


ndarray.__module__ = "cupy._core.core"


def _dev(a, like=None):
    """``a`` as a device array: on ``like``'s device when it derives from a
    device array (as CuPy keeps an array where it is), else the current one."""
    if isinstance(a, np.ndarray) and not isinstance(a, ndarray):
        a = a.view(ndarray)
    if isinstance(a, ndarray):
        a._device_id = like._device_id if isinstance(like, ndarray) else _current[0]
    return a


def asarray(a, dtype=None):
    return _dev(np.asarray(a, dtype=dtype), like=a)


def ascontiguousarray(a):
    return _dev(np.ascontiguousarray(a), like=a)


def empty(shape, dtype=np.float64):
    a = np.empty(shape, dtype)
    if a.dtype.kind == "f":
        a.fill(np.nan)  # unwritten outputs show
    else:
        a.view(np.uint8).fill(0xA5)
    return _dev(a)


def zeros(shape, dtype=np.float64):
    return _dev(np.zeros(shape, dtype))


def arange(*args, dtype=None):
    return _dev(np.arange(*args, dtype=dtype))


def matmul(a, b, out=None):
    _check_devices("matmul", [a, b] + ([] if out is None else [out]))
    return _dev(np.matmul(a, b, out=out), like=a)


def asnumpy(a):
    return np.asarray(a).view(np.ndarray)


float32, float64, int32, int64 = np.float32, np.float64, np.int32, np.int64


class _Device:
    def __init__(self, i=None):
        self.id = _current[0] if i is None else int(i)
        if not 0 <= self.id < DEVICES:
            raise RuntimeError(f"cudaErrorInvalidDevice: device {self.id} of {DEVICES}")
        self._prev = []

    def __enter__(self):
        self._prev.append(_current[0])
        _current[0] = self.id
        return self

    def __exit__(self, *exc):
        _current[0] = self._prev.pop()
        return False

    def synchronize(self):
        pass


class _Event:
    def __init__(self):
        self.t = None

    def record(self):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


def _elapsed_ms(start, stop):
    if start.t is None or stop.t is None:
        raise RuntimeError("cudaErrorInvalidResourceHandle: an event was not recorded")
    return (stop.t - start.t) * 1e3


cuda = types.SimpleNamespace(
    Device=_Device,
    Event=_Event,
    is_available=lambda: True,
    get_elapsed_time=_elapsed_ms,
    runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {"name": b"host emulator"}),
)

#: set by the test: the ctypes library built from emulate.cpp
LIB = None

_SUFFIX = {"float": "f", "double": "d"}
_ERRORS = {1: "cudaErrorInvalidConfiguration", 2: "cudaErrorLaunchOutOfResources (block above __launch_bounds__)"}


def _check_devices(what, arrays):
    for a in arrays:
        if isinstance(a, ndarray) and a._device_id != _current[0]:
            raise RuntimeError(f"cudaErrorIllegalAddress: {what} on device {_current[0]} was given an array "
                               f"of device {a._device_id}")


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


def _dims(v):
    v = tuple(int(i) for i in (v if isinstance(v, tuple) else (v,)))
    return v + (1,) * (3 - len(v))


class _Function:
    def __init__(self, name, device_id):
        base = name.split("<")[0]
        targs = [t.strip() for t in name[name.index("<") + 1:-1].split(",")]
        suffix = _SUFFIX[targs[0]]
        if base == "sparse_gemm":
            tiles = (ctypes.c_int * 5)()
            getattr(LIB, "emu_sparse_gemm_tiles_" + suffix)(tiles)
            if tuple(tiles) != tuple(int(t) for t in targs[1:]):
                raise NotImplementedError(f"the emulator builds {base}<{targs[0]},{','.join(map(str, tiles))}>, "
                                          f"not {name}")
            sym = f"emu_sparse_gemm_{suffix}"
        elif base == "input_adjoint_gather":
            sym = f"emu_input_adjoint_gather_{suffix}"
        else:
            sym = f"emu_{base}_{suffix}_{targs[1]}"
        self.fn = getattr(LIB, sym)
        self.fn.restype = ctypes.c_int
        self.name = name
        self.device_id = device_id

    def __call__(self, grid, block, args):
        if _current[0] != self.device_id:
            raise RuntimeError(f"cudaErrorInvalidResourceHandle: {self.name} of device {self.device_id}'s module "
                               f"launched on device {_current[0]}")
        _check_devices(self.name, args)
        keep = []
        cargs = [_marshal(a, keep) for a in args]
        launch = (ctypes.c_uint * 6)(*_dims(grid), *_dims(block))
        seed = ctypes.c_ulonglong(SEED * 1000003 + next(_launches))
        LAUNCHED.append(self.name)
        err = self.fn(launch, seed, *cargs)
        if err:
            raise RuntimeError(f"{_ERRORS.get(err, err)}: {self.name} with grid {_dims(grid)}, block {_dims(block)}")


class RawModule:
    def __init__(self, code, options=(), name_expressions=()):
        self.names = set(name_expressions)
        self.device_id = _current[0]

    def compile(self):
        return self

    def get_function(self, name):
        assert name in self.names, f"{name} was not registered as a name expression"
        return _Function(name, self.device_id)


@contextlib.contextmanager
def installed(monkeypatch, lib, seed=0):
    """Install this module as ``cupy`` for the duration of a test."""
    import sys

    global LIB, SEED
    LIB, SEED = lib, seed
    _current[0] = 0
    LAUNCHED.clear()
    mod = sys.modules[__name__]
    monkeypatch.setitem(sys.modules, "cupy", mod)
    yield mod
