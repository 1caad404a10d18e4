"""Backend selection, device rules and their errors (CPU-only, with a fake
device backend), plus the CUDA compile check that needs no GPU."""
import os
import shutil
import threading

import numpy as np
import pytest

import pywino3d
from pywino3d._backends import dispatch as _backend
from pywino3d._backends.cuda import sources as _cuda_sources
from pywino3d._core import env as _env
from pywino3d._backends.cpu.backend import BACKEND as CPU


class FakeDeviceArray(np.ndarray):
    """Looks like a CuPy array to the dispatcher (module 'cupy...')."""

    def get(self):
        return np.asarray(self).view(np.ndarray).copy()


FakeDeviceArray.__module__ = "cupy.fake"


def dev(a):
    return np.array(a).view(FakeDeviceArray)


class FakeCuda:
    """A 'cuda' backend computing on the host with FakeDeviceArray results."""

    name = "cuda"
    xp = np

    def __init__(self):
        self.calls = 0

    @staticmethod
    def owns(a):
        return isinstance(a, FakeDeviceArray)

    def asarray(self, name, a, coerce):
        if isinstance(a, FakeDeviceArray):
            return a.view(np.ndarray)
        if not coerce:
            raise TypeError(f"{name}: is a host array but the backend is 'cuda'; ... coerce=True to copy")
        return np.asarray(a)

    def to_own(self, a):
        return dev(a)

    def resolve_workers(self, workers):
        return 1

    def _wrap(fn):
        def inner(self, *args, **kw):
            self.calls += 1
            out = getattr(CPU, fn)(*args, **kw)
            return tuple(dev(o) for o in out) if isinstance(out, tuple) else dev(out)
        return inner

    filter_transform = _wrap("filter_transform")
    conv_weights = _wrap("conv_weights")
    filter_transform_backward = _wrap("filter_transform_backward")
    forward = _wrap("forward")
    backward = _wrap("backward")


@pytest.fixture
def fake_cuda():
    fake = FakeCuda()
    _backend.register("cuda", fake)
    try:
        yield fake
    finally:
        _backend.unregister("cuda")
        pywino3d.set_backend("auto")


@pytest.fixture
def data(rng):
    x = rng.standard_normal((1, 2, 5, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3, 3)).astype(np.float32)
    return x, w


def test_names_and_errors(monkeypatch):
    for bad in ("gpu", "CPU", "", None, 3):
        with pytest.raises(ValueError, match="backend: expected one of"):
            pywino3d.set_backend(bad)
    with pytest.raises(ValueError, match="backend: expected one of"):
        with pywino3d.use_backend("tpu"):
            pass
    monkeypatch.setenv("PYWINO3D_BACKEND", "nope")
    with pytest.raises(ValueError, match="PYWINO3D_BACKEND"):
        pywino3d.get_backend()
    with pytest.raises(ValueError, match="backend: expected"):
        pywino3d.conv3d(np.zeros((1, 1, 3, 3, 3)), np.zeros((1, 1, 3, 3, 3)), backend="gpu")


def test_precedence(monkeypatch):
    monkeypatch.setenv("PYWINO3D_BACKEND", "cuda")
    assert pywino3d.get_backend() == "cuda"
    pywino3d.set_backend("cpu")
    try:
        assert pywino3d.get_backend() == "cpu"  # set_backend beats the environment
        with pywino3d.use_backend("auto"):
            assert pywino3d.get_backend() == "auto"  # context beats set_backend
            assert _backend.resolve("cuda", np.zeros(1)) == "cuda"  # per call beats all
            assert _backend.resolve(None, np.zeros(1)) == "cpu"  # auto follows x
            assert _backend.resolve(None, dev(np.zeros(1))) == "cuda"
        assert pywino3d.get_backend() == "cpu"
    finally:
        pywino3d.set_backend("auto")
    monkeypatch.delenv("PYWINO3D_BACKEND")
    assert pywino3d.get_backend() == "auto"


def test_environment_read_matches_os_environ(monkeypatch):
    """The backend variable is read on every call, as os.environ.get reads it
    (set, changed, unset, non-ASCII), also where os.environ lacks the dict it
    is read from."""
    for value in ("cpu", " CUDA ", "caf\u00e9", ""):
        monkeypatch.setenv("PYWINO3D_BACKEND", value)
        assert _env.getenv("PYWINO3D_BACKEND") == os.environ.get("PYWINO3D_BACKEND") == value
    monkeypatch.delenv("PYWINO3D_BACKEND")
    assert _env.getenv("PYWINO3D_BACKEND") is None
    monkeypatch.setattr(_env.os, "environ", {"PYWINO3D_BACKEND": "cuda"})
    assert _env.getenv("PYWINO3D_BACKEND") == "cuda" and pywino3d.get_backend() == "cuda"


def test_context_is_per_thread():
    seen = {}
    ready, done = threading.Event(), threading.Event()

    def other():
        ready.wait()
        seen["other"] = pywino3d.get_backend()
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with pywino3d.use_backend("cpu"):
        ready.set()
        done.wait()
        seen["here"] = pywino3d.get_backend()
    t.join()
    assert seen == {"other": "auto", "here": "cpu"}


def test_available_backends_and_missing_cuda(data):
    ok, why = _backend.cuda_status()
    assert pywino3d.available_backends()[0] == "cpu"
    assert ("cuda" in pywino3d.available_backends()) == ok
    if not ok:
        x, w = data
        with pytest.raises(RuntimeError, match="backend 'cuda' requested but unavailable: (CuPy|.*GPU)"):
            pywino3d.conv3d(x, w, backend="cuda")
        with pytest.raises(RuntimeError, match="unavailable"):
            pywino3d.conv3d(dev(x), dev(w))  # auto -> cuda for a device array


def test_auto_never_imports_cupy_for_numpy(data, tmp_path):
    import subprocess
    import sys

    code = ("import sys, numpy as np, pywino3d; x = np.ones((1,1,4,4,4)); "
            "pywino3d.conv3d(x, x[:, :, :3, :3, :3]); print('cupy' in sys.modules)")
    # run outside the source tree so the installed package is imported
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.strip() == "False"


def test_forced_backend_mismatch_and_coerce(data, fake_cuda):
    x, w = data
    ref = pywino3d.conv3d(x, w, padding=1, tile=2)
    # device x on the cpu backend: TypeError that says how to fix it
    with pytest.raises(TypeError, match=r"^x: is a CuPy \(GPU\) array but the backend is 'cpu'.*coerce=True"):
        pywino3d.conv3d(dev(x), dev(w), padding=1, tile=2, backend="cpu")
    # host x on the cuda backend
    with pytest.raises(TypeError, match=r"^x: is a host array but the backend is 'cuda'"):
        pywino3d.conv3d(x, w, padding=1, tile=2, backend="cuda")
    # weights must follow x
    with pytest.raises(TypeError, match=r"^w: is a host array"):
        pywino3d.conv3d(dev(x), w, padding=1, tile=2)
    with pytest.raises(TypeError, match=r"^w: is a CuPy"):
        pywino3d.conv3d(x, dev(w), padding=1, tile=2)
    # coerce=True copies, and the result has x's array type
    y = pywino3d.conv3d(dev(x), dev(w), padding=1, tile=2, backend="cpu", coerce=True)
    assert isinstance(y, FakeDeviceArray)
    np.testing.assert_array_equal(np.asarray(y), ref)
    y = pywino3d.conv3d(x, w, padding=1, tile=2, backend="cuda", coerce=True)
    assert type(y) is np.ndarray and fake_cuda.calls > 0
    np.testing.assert_array_equal(y, ref)


def test_auto_follows_x_type(data, fake_cuda):
    x, w = data
    U = pywino3d.filter_transform(dev(w), 2)
    assert isinstance(U, FakeDeviceArray) and fake_cuda.calls == 1
    y = pywino3d.winograd_conv3d(dev(x), U, kernel_size=3, tile=2, padding=1, columns=dev(np.arange(5)))
    assert isinstance(y, FakeDeviceArray)
    gx, gU = pywino3d.winograd_conv3d_backward(dev(np.ones(y.shape, np.float32)), dev(x), U,
                                               kernel_size=3, tile=2, padding=1)
    assert isinstance(gx, FakeDeviceArray) and isinstance(gU, FakeDeviceArray)
    gw = pywino3d.filter_transform_backward(gU, 3, 2)
    assert isinstance(gw, FakeDeviceArray)
    with pywino3d.use_backend("cpu"):
        with pytest.raises(TypeError, match="coerce"):
            pywino3d.filter_transform(dev(w), 2)


# -------------------------------------------------- CUDA sources, no GPU needed

def test_cuda_sources_are_found():
    d = _cuda_sources.kernel_dir()
    assert _cuda_sources.kernel_path().is_file()
    for h in _cuda_sources.HEADERS:
        assert (d / h).is_file()
    src = _cuda_sources.kernel_source()
    assert '#include "wino3d_tile.h"' in src


def test_cuda_sources_installed_with_package():
    """A non-editable install ships the kernels inside the package."""
    import pathlib

    pkg = pathlib.Path(pywino3d.__file__).parent
    kernels = pathlib.Path(_cuda_sources.__file__).parent / "kernels"  # package data beside the loader
    if (pkg.parent / "src" / "cuda").is_dir() and not kernels.is_dir():
        pytest.skip("running from a source checkout (editable install); "
                    "the installed-package layout is checked in CI's pip install")
    assert (kernels / _cuda_sources.KERNEL_FILE).is_file()
    for header in _cuda_sources.HEADERS:
        assert (kernels / header).is_file()
    assert _cuda_sources.kernel_dir() == kernels


def _have_nvrtc():
    try:
        from cuda.bindings import nvrtc  # noqa: F401

        return True
    except Exception:
        return False


def test_every_kernel_compiles_for_sm90():
    """Every (dtype x AMAX) instantiation compiles: NVRTC when cuda-bindings is
    installed (the test extra brings it), else nvcc -ptx.  Fails, never skips,
    when neither compiler is present."""
    names = _cuda_sources.kernel_names()
    assert len(names) == len(set(names)) == 2 * (len(_cuda_sources.AMAX_CLASSES) * 5 + 2)
    if _have_nvrtc():
        lowered = _cuda_sources.nvrtc_compile("compute_90")
        assert set(lowered) == set(names)
        assert all(v for v in lowered.values())
        # the log buffer must be our own: an empty log once overwrote the
        # interpreter's shared b" " with a NUL (and broke torch.load later)
        assert b" ".join([b"a", b"b"]) == b"a b"
    else:
        nvcc = shutil.which("nvcc")
        assert nvcc, "neither NVRTC (pip install cuda-bindings nvidia-cuda-nvrtc) nor nvcc is available"
        ptx = _cuda_sources.nvcc_compile("compute_90", nvcc=nvcc)
        assert ptx.count(".entry") == len(names)


def test_shared_header_in_cpu_build():
    """The CPU extension is compiled from the same per-tile header."""
    import pathlib

    cpu_h = (pathlib.Path(_cuda_sources.kernel_dir()) / "wino3d_tile.template.h").read_text()
    assert "WINO_HD" in cpu_h and "wino_expand_dims_" in cpu_h


# ------------------------------------------------------------ on a real GPU
from conftest import CUDA_OK, CUDA_WHY  # noqa: E402

gpu = pytest.mark.skipif(not CUDA_OK, reason=CUDA_WHY)


@gpu
@pytest.mark.parametrize("mode", ["rawkernel", "cublas", "auto"])
@pytest.mark.parametrize("density", [1.0, 0.3])
def test_cuda_product_implementations(rng, mode, density):
    import cupy as cp

    from pywino3d._backends.cuda import backend as _cuda_backend
    from pywino3d._core.geometry import make_geometry
    from pywino3d._core.validation import as_columns

    x = rng.standard_normal((2, 5, 7, 9, 6)).astype(np.float32)
    w = rng.standard_normal((6, 5, 3, 3, 3)).astype(np.float32)
    U = pywino3d.filter_transform(w, 4)
    cols = None if density == 1.0 else np.sort(rng.choice(216, int(216 * density), replace=False))
    ref = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=4, padding=1, columns=cols)
    g = make_geometry(x.shape, 6, (3, 3, 3), 1, (4, 4, 4))
    y = _cuda_backend.BACKEND.forward(g, cp.asarray(x), cp.asarray(U), None, as_columns(cols, 216), 1,
                                      product_mode=mode)
    np.testing.assert_allclose(cp.asnumpy(y), ref, rtol=1e-4, atol=1e-4)


@gpu
def test_cuda_module_memoized_per_device():
    import cupy as cp

    from pywino3d._backends.cuda import backend as _cuda_backend

    dev = cp.cuda.Device().id
    assert _cuda_backend._module(dev) is _cuda_backend._module(dev)


@gpu
def test_cuda_output_follows_x_device_and_dtype(rng):
    import cupy as cp

    x = cp.asarray(rng.standard_normal((1, 2, 5, 5, 5)))
    w = cp.asarray(rng.standard_normal((3, 2, 3, 3, 3)))
    y = pywino3d.conv3d(x, w, padding=1)
    assert isinstance(y, cp.ndarray) and y.dtype == x.dtype and y.device == x.device
    np.testing.assert_allclose(cp.asnumpy(y), pywino3d.conv3d(cp.asnumpy(x), cp.asnumpy(w), padding=1),
                               rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------ the protocol
def test_register_checks_the_backend_protocol():
    """register() accepts only objects with every member of
    _backend.Backend and says which are missing."""
    assert isinstance(CPU, _backend.Backend)
    assert isinstance(FakeCuda(), _backend.Backend)

    class Half:
        name = "half"
        xp = np

        def owns(self, a):
            return False

    with pytest.raises(TypeError, match="missing asarray, to_own"):
        _backend.register("half", Half())
    assert "half" not in _backend._REGISTRY
    with pytest.raises(ValueError, match="auto"):
        _backend.register("auto", FakeCuda())


def test_no_import_circle_through_validation():
    """_validation, which the geometry and every backend use, imports nothing
    of the package, so no import circle runs through it."""
    import ast
    import inspect

    from pywino3d._core import validation as _validation

    tree = ast.parse(inspect.getsource(_validation))
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.level > 0 or
                (n.module or "").startswith("pywino3d"))]
    assert not relative, "pywino3d._core.validation must not import the package"
