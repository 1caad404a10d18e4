"""Run the CUDA kernels of src/cuda/wino3d_kernels.cu on the CPU.

The .cu file is compiled as C++20 with a small shim (tests/cuda_emulation/)
for every instantiation the library launches (float and double, every AMAX
class).  Launches honour the grid and block sizes they are given: tile
kernels run every thread of the launch once, blocks and threads in a seeded
shuffled order; sparse_gemm runs each block as real threads meeting at a
barrier.  The stand-in CuPy (fake_cupy.py) fills new arrays with NaN,
checks that a launch's arrays live on the current device, and times with
the host clock.  Through it pywino3d/_backends/cuda/backend.py itself runs on CPU-only
CI: its kernels' indexing, padding, column sparsity, launch sizes and both
GEMM orientations are compared with the CPU backend and a float64
reference.  What only a GPU run can check is listed in docs/backends.md."""
import ctypes
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import pywino3d
from pywino3d._backends.cuda.sources import amax_class, kernel_dir, kernel_path
from pywino3d._core.geometry import axis_matrices

HERE = pathlib.Path(__file__).parent / "cuda_emulation"


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the CUDA emulator")
    out = tmp_path_factory.mktemp("emu") / "emu.so"
    cmd = [cxx, "-O1", "-std=c++20", "-shared", "-fPIC", "-pthread", "-include", str(HERE / "shim.h"),
           f"-I{kernel_dir()}", f"-I{kernel_path().parent}", str(HERE / "emulate.cpp"), "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return ctypes.CDLL(str(out))


def P(a):
    return a.ctypes.data_as(ctypes.c_void_p)


LL = ctypes.c_longlong


def launch(grid, block=256):
    """The launch-size and seed arguments of the emulator's entry points."""
    return (ctypes.c_uint * 6)(*grid, *(1,) * (3 - len(grid)), block, 1, 1), ctypes.c_ulonglong(7)


class Plan:
    """Host copy of _cuda_backend._DevicePlan (same argument order)."""

    def __init__(self, which, tile, ksize, kept, dtype=np.float32):
        mats = [np.ascontiguousarray(axis_matrices(m, r, np.dtype(dtype).str)[which], dtype=dtype)
                for m, r in zip(tile, ksize)]
        a = [m.shape[0] for m in mats]
        n = [m.shape[1] for m in mats]
        self.mats = mats
        self.dims = np.array(a + n, dtype=np.int32)
        self.kept = np.ascontiguousarray(kept, dtype=np.int32)
        rem = self.kept % (a[1] * a[2])
        self.need_w = np.zeros(a[2], np.uint8)
        self.need_w[rem % a[2]] = 1
        self.need_hw = np.zeros(a[1] * a[2], np.uint8)
        self.need_hw[rem] = 1

    def args(self):
        return (*map(P, self.mats), P(self.dims), P(self.kept), ctypes.c_int(self.kept.size),
                P(self.need_w), P(self.need_hw))


@pytest.fixture
def problem(rng):
    x = rng.standard_normal((2, 3, 5, 6, 7)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    cols = np.sort(rng.choice(216, 12, replace=False)).astype(np.int32)
    return x, w, b, cols


def _fake_cupy():
    sys.path.insert(0, str(HERE))
    try:
        import fake_cupy
    finally:
        sys.path.pop(0)
    return fake_cupy


def _clear_backend_caches():
    from pywino3d._backends.cuda import backend as _cuda_backend

    _cuda_backend._module.cache_clear()
    _cuda_backend._plan.cache_clear()
    _cuda_backend._product_choice.clear()


def _installed(emu, monkeypatch, seed):
    _clear_backend_caches()
    return _fake_cupy().installed(monkeypatch, emu, seed=seed)


@pytest.fixture(params=[0, 1], ids=["order0", "order1"])
def fake_gpu(emu, monkeypatch, request):
    """pywino3d's real CUDA backend on the host emulator, under two seeds of
    the block and thread order."""
    with _installed(emu, monkeypatch, request.param) as cp:
        yield cp
    _clear_backend_caches()


@pytest.fixture
def fake_gpu1(emu, monkeypatch):
    """As fake_gpu, one order."""
    with _installed(emu, monkeypatch, 5) as cp:
        yield cp
    _clear_backend_caches()


def assert_as_accurate(got, cpu32, ref, what=""):
    """``got`` (emulated GPU, float32 or float64) is as close to the float64
    CPU result ``ref`` as the float32 CPU result ``cpu32`` is, up to a factor
    4 (the two sum in other orders) -- for a float64 ``got``, that error
    scaled by eps(float64) / eps(float32) -- plus a few ulp of the result.
    The tolerance follows the algorithm's real error on this problem."""
    ref = np.asarray(ref, np.float64)
    eps = np.finfo(np.asarray(got).dtype).eps
    err32 = np.abs(np.asarray(cpu32, np.float64) - ref).max(initial=0)
    tol = 4 * err32 * eps / np.finfo(np.float32).eps + 16 * eps * np.abs(ref).max(initial=0)
    got = np.asarray(got, np.float64)
    err = np.abs(got - ref).max(initial=0)
    assert np.isfinite(got).all() and err <= tol, f"{what}: error {err:.3g} > {tol:.3g} (float32 CPU's: {err32:.3g})"


# ------------------------------------------------------------ the emulator itself
def test_emulated_filter_transform(emu, problem):
    x, w, b, cols = problem
    U = np.zeros((216, 4, 3), np.float32)
    pl = Plan(2, (4, 4, 4), (3, 3, 3), np.arange(216))
    assert emu.emu_filter_transform_f_6(*launch((1,)), P(w), LL(12), *pl.args(), ctypes.c_int(0), P(U)) == 0
    np.testing.assert_allclose(U, pywino3d.filter_transform(w, 4), rtol=1e-6, atol=1e-6)
    gw = np.empty_like(w)
    assert emu.emu_filter_transform_f_6(*launch((1,)), P(U), LL(12), *pl.args(), ctypes.c_int(1), P(gw)) == 0
    np.testing.assert_allclose(gw, pywino3d.filter_transform_backward(U, 3, 4), rtol=1e-5, atol=1e-5)


def test_emulator_honours_the_launch_size(emu, problem):
    """Too few blocks leave outputs unwritten; a block above 1024 threads or
    above sparse_gemm's __launch_bounds__, or an empty grid, is refused."""
    x, w, b, cols = problem
    pl = Plan(2, (4, 4, 4), (3, 3, 3), np.arange(216))
    U = np.full((216, 4, 3), np.nan, np.float32)
    # 12 (k, c) pairs, one per thread: blocks of 8 threads need 2 blocks
    assert emu.emu_filter_transform_f_6(*launch((1,), 8), P(w), LL(12), *pl.args(), ctypes.c_int(0), P(U)) == 0
    assert np.isnan(U).sum() == 216 * 4 and np.isnan(U.reshape(216, 12)[:, 8:]).all()
    assert emu.emu_filter_transform_f_6(*launch((2,), 8), P(w), LL(12), *pl.args(), ctypes.c_int(0), P(U)) == 0
    np.testing.assert_allclose(U, pywino3d.filter_transform(w, 4), rtol=1e-6, atol=1e-6)
    assert emu.emu_filter_transform_f_6(*launch((1,), 2048), P(w), LL(12), *pl.args(), ctypes.c_int(0), P(U)) == 1
    assert emu.emu_filter_transform_f_6(*launch((0,), 64), P(w), LL(12), *pl.args(), ctypes.c_int(0), P(U)) == 1
    A = np.ones((1, 4, 4), np.float32)
    C = np.zeros((1, 4, 4), np.float32)
    idx = np.zeros(1, np.int32)
    args = (LL(4), LL(4), LL(4), P(A), P(idx), LL(16), LL(4), LL(1), P(A), LL(16), LL(4), LL(1), P(C), P(idx),
            LL(16), LL(4), ctypes.c_int(0))
    assert emu.emu_sparse_gemm_f(*launch((1, 1, 1), 512), *args) == 2  # (64/4) * (64/4) = 256 at most
    assert not C.any()
    assert emu.emu_sparse_gemm_f(*launch((1, 1, 1), 256), *args) == 0
    np.testing.assert_array_equal(C, np.full((1, 4, 4), 4, np.float32))


# ------------------------------------------------------------ the CUDA backend on it
def test_cuda_backend_end_to_end_on_emulator(fake_gpu, problem, monkeypatch):
    """The public API with device arrays runs pywino3d/_backends/cuda/backend.py (auto
    dispatch), and is as accurate as the CPU backend: conv3d, the sparse
    forward with both product implementations, backward and the filter
    adjoint."""
    cp = fake_gpu
    from pywino3d._backends.cuda import backend as _cuda_backend

    x, w, b, cols = problem
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    assert "cuda" in pywino3d.available_backends()
    y = pywino3d.conv3d(cp.asarray(x), cp.asarray(w), cp.asarray(b), padding=1, tile=2)
    assert type(y) is cp.ndarray and y.dtype == np.float32
    assert_as_accurate(y.get(), pywino3d.conv3d(x, w, b, padding=1, tile=2),
                       pywino3d.conv3d(x64, w64, b64, padding=1, tile=2), "conv3d")

    U = pywino3d.filter_transform(w, 4)
    U64 = pywino3d.filter_transform(w64, 4)
    kw = dict(kernel_size=3, tile=4, padding=1, columns=cols)
    cpu = pywino3d.winograd_conv3d(x, U, bias=b, **kw)
    ref = pywino3d.winograd_conv3d(x64, U64, bias=b64, **kw)
    monkeypatch.setattr(_cuda_backend, "GPU_WORKSPACE_BYTES", 12 * 7 * 4 * 9)  # several blocks
    fwd = _cuda_backend.CudaBackend.forward
    for mode in ("rawkernel", "cublas", "auto"):
        def forward(self, *args, mode=mode, **kw):
            return fwd(self, *args, product_mode=mode)

        monkeypatch.setattr(_cuda_backend.CudaBackend, "forward", forward)
        yd = pywino3d.winograd_conv3d(cp.asarray(x), cp.asarray(U), bias=cp.asarray(b), **{
            **kw, "columns": cp.asarray(cols)})
        assert_as_accurate(yd.get(), cpu, ref, mode)

    gy = np.random.default_rng(1).standard_normal(ref.shape).astype(np.float32)
    gx, gU = pywino3d.winograd_conv3d_backward(cp.asarray(gy), cp.asarray(x), cp.asarray(U), **kw)
    cgx, cgU = pywino3d.winograd_conv3d_backward(gy, x, U, **kw)
    rgx, rgU = pywino3d.winograd_conv3d_backward(gy.astype(np.float64), x64, U64, **kw)
    assert type(gx) is cp.ndarray and type(gU) is cp.ndarray
    assert_as_accurate(gx.get(), cgx, rgx, "grad_x")
    assert_as_accurate(gU.get(), cgU, rgU, "grad_U")
    assert not gU.get()[np.setdiff1d(np.arange(216), cols)].any()
    gw = pywino3d.filter_transform_backward(gU, 3, 4)
    assert_as_accurate(gw.get(), pywino3d.filter_transform_backward(cgU, 3, 4),
                       pywino3d.filter_transform_backward(rgU, 3, 4), "grad_w")
    with pytest.raises(TypeError, match="^x: is a host"):
        pywino3d.conv3d(x, w, backend="cuda")


#: (tile, kernel) per AMAX class: alpha = m + r - 1 reaches the class on one axis.
CLASSES = {4: ((2, 2, 2), (3, 3, 3)), 6: ((4, 2, 1), (3, 3, 1)), 8: ((6, 1, 2), (3, 1, 2)),
           10: ((8, 1, 1), (3, 2, 1)), 14: ((8, 1, 1), (7, 1, 1))}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("amax", sorted(CLASSES))
def test_every_alpha_class_and_dtype(fake_gpu1, amax, dtype):
    """Each (dtype, AMAX) instantiation runs, and forward (bias, pruned
    columns), backward and both filter transforms are as accurate as the CPU
    backend's (float64: to ~1e-15; float32: the CPU's own error, which at
    alpha 14 is large)."""
    cp = fake_gpu1
    fake = sys.modules["cupy"]
    tile, ks = CLASSES[amax]
    assert amax_class(max(m + r - 1 for m, r in zip(tile, ks))) == amax
    rng = np.random.default_rng(amax)
    h64 = [rng.standard_normal((2, 3, 9, 5, 4)), rng.standard_normal((4, 3, *ks)), rng.standard_normal(4)]
    h32 = [a.astype(np.float32) for a in h64]
    npos = int(np.prod([m + r - 1 for m, r in zip(tile, ks)]))
    cols = np.sort(rng.choice(npos, max(1, npos // 2), replace=False)).astype(np.int32)
    kw = dict(kernel_size=ks, tile=tile, padding=1)
    for h in (h32, h64):  # U of each dtype
        h.append(pywino3d.filter_transform(h[1], tile))
    x, w, b, U = h32 if dtype == np.float32 else h64
    d = [cp.asarray(a) for a in (x, w, b, U)]

    def both(f):
        """(float32 CPU, float64 CPU) results of f(x, w, b, U)."""
        return f(*h32), f(*h64)

    assert_as_accurate(pywino3d.filter_transform(d[1], tile).get(), *both(lambda x, w, b, U: U), "U")
    y = pywino3d.winograd_conv3d(d[0], d[3], bias=d[2], **kw)
    assert_as_accurate(y.get(), *both(lambda x, w, b, U: pywino3d.winograd_conv3d(x, U, bias=b, **kw)), "forward")
    ys = pywino3d.winograd_conv3d(d[0], d[3], columns=cols, **kw)
    assert_as_accurate(ys.get(), *both(lambda x, w, b, U: pywino3d.winograd_conv3d(x, U, columns=cols, **kw)),
                       "sparse forward")
    gy64 = rng.standard_normal(ys.shape)
    gys = {np.dtype(np.float32): gy64.astype(np.float32), np.dtype(np.float64): gy64}
    gx, gU = pywino3d.winograd_conv3d_backward(cp.asarray(gys[np.dtype(dtype)]), d[0], d[3], columns=cols, **kw)
    c32, c64 = both(lambda x, w, b, U: pywino3d.winograd_conv3d_backward(gys[x.dtype], x, U, columns=cols, **kw))
    assert_as_accurate(gx.get(), c32[0], c64[0], "grad_x")
    assert_as_accurate(gU.get(), c32[1], c64[1], "grad_U")
    assert_as_accurate(pywino3d.filter_transform_backward(gU, ks, tile).get(),
                       pywino3d.filter_transform_backward(c32[1], ks, tile),
                       pywino3d.filter_transform_backward(c64[1], ks, tile), "grad_w")
    ctype = "float" if dtype == np.float32 else "double"
    tile_kernels = {n for n in fake.LAUNCHED if not n.startswith(("sparse_gemm", "input_adjoint_gather"))}
    assert tile_kernels == {f"{k}<{ctype},{amax}>" for k in ("filter_transform", "input_transform",
                                                             "output_transform", "output_adjoint",
                                                             "input_adjoint_patches")}
    assert f"input_adjoint_gather<{ctype}>" in fake.LAUNCHED
    assert any(n.startswith(f"sparse_gemm<{ctype},") for n in fake.LAUNCHED)


def test_results_do_not_depend_on_thread_order(emu, monkeypatch, problem):
    """Forward and backward are bit-identical under two shuffled orders of
    blocks and threads (no kernel reads what another thread of the same
    launch writes)."""
    x, w, b, cols = problem
    U = pywino3d.filter_transform(w, 4)
    out = []
    for seed in (11, 12):
        with _installed(emu, monkeypatch, seed) as cp:
            y = pywino3d.winograd_conv3d(cp.asarray(x), cp.asarray(U), kernel_size=3, tile=4, padding=1,
                                         bias=cp.asarray(b), columns=cp.asarray(cols))
            gx, gU = pywino3d.winograd_conv3d_backward(cp.asarray(y), cp.asarray(x), cp.asarray(U),
                                                       kernel_size=3, tile=4, padding=1, columns=cols)
            out.append([a.get().tobytes() for a in (y, gx, gU)])
    _clear_backend_caches()
    assert out[0] == out[1]


def test_a_launch_size_bug_is_caught(fake_gpu1, monkeypatch, problem):
    """The emulator sees a launch that rounds the block count down (the
    last partial block of threads missing): the outputs it never wrote are
    NaN."""
    cp = fake_gpu1
    from pywino3d._backends.cuda import backend as _cuda_backend

    def floor_launch(name, n, args):
        if n > 0:
            _cuda_backend._kernel(name)((max(1, int(n) // _cuda_backend._BLOCK),), (_cuda_backend._BLOCK,), args)

    x = np.random.default_rng(0).standard_normal((1, 3, 11, 10, 12)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3, 3)).astype(np.float32)
    good = pywino3d.conv3d(cp.asarray(x), cp.asarray(w), padding=1, tile=2).get()
    assert np.isfinite(good).all()
    monkeypatch.setattr(_cuda_backend, "_launch", floor_launch)
    bad = pywino3d.conv3d(cp.asarray(x), cp.asarray(w), padding=1, tile=2).get()
    assert np.isnan(bad).any()


@pytest.mark.parametrize("call", ["filter_transform_backward", "filter_transform", "forward", "backward"])
def test_every_method_runs_on_its_arrays_device(fake_gpu1, problem, call):
    """Arrays on device 1 while device 0 is current: each backend method
    switches to the arrays' device (as the other methods, the filter
    adjoint too), so the launches find their module and arrays there, and
    the result lives on device 1."""
    cp = fake_gpu1
    x, w, b, cols = problem
    U = pywino3d.filter_transform(w, 4)
    gy = np.random.default_rng(2).standard_normal((2, 4, 5, 6, 7)).astype(np.float32)
    with cp.cuda.Device(1):
        x1, w1, U1, gy1 = (cp.asarray(a) for a in (x, w, U, gy))
    assert x1.device.id == 1 and cp.cuda.Device().id == 0
    if call == "filter_transform_backward":
        got, want = pywino3d.filter_transform_backward(U1, 3, 4), pywino3d.filter_transform_backward(U, 3, 4)
    elif call == "filter_transform":
        got, want = pywino3d.filter_transform(w1, 4), U
    elif call == "forward":
        got = pywino3d.winograd_conv3d(x1, U1, kernel_size=3, tile=4, padding=1)
        want = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=4, padding=1)
    else:
        got = pywino3d.winograd_conv3d_backward(gy1, x1, U1, kernel_size=3, tile=4, padding=1)[0]
        want = pywino3d.winograd_conv3d_backward(gy, x, U, kernel_size=3, tile=4, padding=1)[0]
    assert got.device.id == 1 and cp.cuda.Device().id == 0
    np.testing.assert_allclose(got.get(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_emulated_launch_on_the_wrong_device_fails(fake_gpu1, problem):
    """What the guard prevents: launching device-1 arrays on device 0."""
    cp = fake_gpu1
    from pywino3d._backends.cuda import backend as _cuda_backend

    U = pywino3d.filter_transform(problem[1], 4)
    with cp.cuda.Device(1):
        U1 = cp.asarray(U)
    with pytest.raises(RuntimeError, match="cudaErrorIllegalAddress"):
        _cuda_backend.CudaBackend.filter_transform_backward.__wrapped__(_cuda_backend.BACKEND, U1, (3, 3, 3),
                                                                        (4, 4, 4), 1)


def test_product_auto_keeps_the_measured_faster(fake_gpu1, problem, monkeypatch):
    """product="auto" times both implementations (pywino3d.autotune, the
    package's one tuner) and keeps the faster: slow either one down and the
    other is chosen."""
    cp = fake_gpu1
    from pywino3d._backends.cuda import backend as _cuda_backend

    x, w, b, cols = problem
    U = pywino3d.filter_transform(w, 4)
    fake = sys.modules["cupy"]
    real_matmul, real_raw = fake.matmul, _cuda_backend._gemm_raw
    from pywino3d import autotune

    for slow, fast in (("cublas", "rawkernel"), ("rawkernel", "cublas")):
        _cuda_backend._product_choice.clear()
        autotune.clear(memory=True, disk=True)  # the choice is the package tuner's (cached per machine)
        if slow == "cublas":
            monkeypatch.setattr(fake, "matmul", lambda *a, **k: time.sleep(0.25) or real_matmul(*a, **k))
            monkeypatch.setattr(_cuda_backend, "_gemm_raw", real_raw)
        else:
            monkeypatch.setattr(fake, "matmul", real_matmul)
            monkeypatch.setattr(_cuda_backend, "_gemm_raw", lambda *a: time.sleep(0.25) or real_raw(*a))
        pywino3d.winograd_conv3d(cp.asarray(x), cp.asarray(U), kernel_size=3, tile=4, padding=1,
                                 columns=cp.asarray(cols))
        assert set(_cuda_backend._product_choice.values()) == {fast}
