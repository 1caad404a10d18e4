"""Run the CUDA kernels of src/cuda/wino3d_kernels.cu on the CPU.

The .cu file is compiled as C++20 with a small shim (tests/cuda_emulation/):
tile kernels run thread by thread, sparse_gemm runs each block as real
threads meeting at a barrier.  The launches below follow
pywino3d/_cuda_backend.py step by step, so CPU-only CI executes the GPU
kernels' indexing, padding, column sparsity and both GEMM orientations and
compares them with the CPU backend."""
import ctypes
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

import pywino3d
from pywino3d._backends.cuda.sources import kernel_dir, kernel_path
from pywino3d._core.geometry import axis_matrices, make_geometry

HERE = pathlib.Path(__file__).parent / "cuda_emulation"
AMAX = 6  # the emulator builds the AMAX 4 and 6 kernels (F(2, 3), F(4, 3), F(2, 5), ...)


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


class Plan:
    """Host copy of _cuda_backend._DevicePlan (same argument order)."""

    def __init__(self, which, tile, ksize, kept):
        mats = [np.ascontiguousarray(axis_matrices(m, r, "<f4")[which], dtype=np.float32)
                for m, r in zip(tile, ksize)]
        a = [m.shape[0] for m in mats]
        n = [m.shape[1] for m in mats]
        assert max(a + n) <= AMAX
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


LL = ctypes.c_longlong


def gemm(emu, nb, M, N, K, A, aidx, sa, rsa, csa, B, sb, rsb, csb, C, cidx, sc, rsc, acc):
    ident = np.arange(nb, dtype=np.int32)
    aidx = ident if aidx is None else aidx
    cidx = ident if cidx is None else cidx
    emu.emu_sparse_gemm(LL(nb), LL(M), LL(N), LL(K), P(A), P(aidx), LL(sa), LL(rsa), LL(csa), P(B), LL(sb),
                        LL(rsb), LL(csb), P(C), P(cidx), LL(sc), LL(rsc), ctypes.c_int(acc))


@pytest.fixture
def problem(rng):
    x = rng.standard_normal((2, 3, 5, 6, 7)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    cols = np.sort(rng.choice(216, 12, replace=False)).astype(np.int32)
    return x, w, b, cols


@pytest.fixture
def fake_gpu(emu, monkeypatch):
    """pywino3d's real CUDA backend, running on the host emulator."""
    import sys

    sys.path.insert(0, str(HERE))
    try:
        import fake_cupy
    finally:
        sys.path.pop(0)
    from pywino3d._backends.cuda import backend as _cuda_backend

    _cuda_backend._module.cache_clear()
    _cuda_backend._plan.cache_clear()
    _cuda_backend._product_choice.clear()
    with fake_cupy.installed(monkeypatch, emu) as cp:
        yield cp
    _cuda_backend._module.cache_clear()
    _cuda_backend._plan.cache_clear()
    _cuda_backend._product_choice.clear()


def test_emulated_filter_transform(emu, problem):
    x, w, b, cols = problem
    U = np.zeros((216, 4, 3), np.float32)
    pl = Plan(2, (4, 4, 4), (3, 3, 3), np.arange(216))
    emu.emu_filter_transform_6(P(w), LL(12), *pl.args(), ctypes.c_int(0), P(U))
    np.testing.assert_allclose(U, pywino3d.filter_transform(w, 4), rtol=1e-6, atol=1e-6)
    gw = np.empty_like(w)
    emu.emu_filter_transform_6(P(U), LL(12), *pl.args(), ctypes.c_int(1), P(gw))
    np.testing.assert_allclose(gw, pywino3d.filter_transform_backward(U, 3, 4), rtol=1e-5, atol=1e-5)


def test_cuda_backend_end_to_end_on_emulator(fake_gpu, problem, monkeypatch):
    """The public API with device arrays runs pywino3d/_cuda_backend.py (auto
    dispatch), and matches the CPU backend: conv3d, the sparse forward with
    both product implementations, backward and the filter adjoint."""
    cp = fake_gpu
    from pywino3d._backends.cuda import backend as _cuda_backend

    x, w, b, cols = problem
    assert "cuda" in pywino3d.available_backends()
    y = pywino3d.conv3d(cp.asarray(x), cp.asarray(w), cp.asarray(b), padding=1, tile=2)
    assert type(y) is cp.ndarray and y.dtype == np.float32
    yc = pywino3d.conv3d(x, w, b, padding=1, tile=2)
    # both are float32 Winograd: they differ by rounding (~1e-5..1e-4 relative), not more
    np.testing.assert_allclose(y.get(), yc, rtol=0, atol=1e-3 * np.abs(yc).max())

    U = pywino3d.filter_transform(w, 4)
    ref = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=4, padding=1, bias=b, columns=cols)
    monkeypatch.setattr(_cuda_backend, "GPU_WORKSPACE_BYTES", 12 * 7 * 4 * 9)  # several blocks
    fwd = _cuda_backend.CudaBackend.forward
    for mode in ("rawkernel", "cublas", "auto"):
        def forward(self, *args, mode=mode, **kw):
            return fwd(self, *args, product_mode=mode)

        monkeypatch.setattr(_cuda_backend.CudaBackend, "forward", forward)
        yd = pywino3d.winograd_conv3d(cp.asarray(x), cp.asarray(U), kernel_size=3, tile=4, padding=1,
                                      bias=cp.asarray(b), columns=cp.asarray(cols))
        np.testing.assert_allclose(yd.get(), ref, rtol=0, atol=1e-3 * np.abs(ref).max(), err_msg=mode)

    gy = np.random.default_rng(1).standard_normal(ref.shape).astype(np.float32)
    gx, gU = pywino3d.winograd_conv3d_backward(cp.asarray(gy), cp.asarray(x), cp.asarray(U), kernel_size=3,
                                               tile=4, padding=1, columns=cols)
    rgx, rgU = pywino3d.winograd_conv3d_backward(gy, x, U, kernel_size=3, tile=4, padding=1, columns=cols)
    assert type(gx) is cp.ndarray and type(gU) is cp.ndarray
    for got, want in ((gx.get(), rgx), (gU.get(), rgU)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * np.abs(want).max())
    assert not gU.get()[np.setdiff1d(np.arange(216), cols)].any()
    gw = pywino3d.filter_transform_backward(gU, 3, 4)
    rgw = pywino3d.filter_transform_backward(rgU, 3, 4)
    np.testing.assert_allclose(gw.get(), rgw, rtol=0, atol=1e-3 * np.abs(rgw).max())
    with pytest.raises(TypeError, match="^x: is a host"):
        pywino3d.conv3d(x, w, backend="cuda")
