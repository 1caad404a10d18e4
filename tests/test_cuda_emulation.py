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
from pywino3d._cuda_sources import kernel_dir, kernel_path
from pywino3d._geometry import axis_matrices, make_geometry

HERE = pathlib.Path(__file__).parent / "cuda_emulation"
AMAX = 6  # the emulator instantiates the AMAX = 6 kernels (F(4, 3), F(2, 5), ...)


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
    cols = np.sort(rng.choice(216, 40, replace=False)).astype(np.int32)
    return x, w, b, cols


def test_emulated_filter_transform(emu, problem):
    x, w, b, cols = problem
    U = np.zeros((216, 4, 3), np.float32)
    pl = Plan(2, (4, 4, 4), (3, 3, 3), np.arange(216))
    emu.emu_filter_transform(P(w), LL(12), *pl.args(), ctypes.c_int(0), P(U))
    np.testing.assert_allclose(U, pywino3d.filter_transform(w, 4), rtol=1e-6, atol=1e-6)
    gw = np.empty_like(w)
    emu.emu_filter_transform(P(U), LL(12), *pl.args(), ctypes.c_int(1), P(gw))
    np.testing.assert_allclose(gw, pywino3d.filter_transform_backward(U, 3, 4), rtol=1e-5, atol=1e-5)


def test_emulated_forward_and_backward(emu, problem):
    x, w, b, kept = problem
    K, C = 4, 3
    U = pywino3d.filter_transform(w, 4)
    g = make_geometry(x.shape, K, (3, 3, 3), 1, (4, 4, 4))
    gdev = np.array(g.as_c(tuple(s // 4 for s in x.strides)), dtype=np.int64)
    T, nk = g.ntiles, kept.size
    pin, pout = Plan(0, g.tile, g.ksize, kept), Plan(1, g.tile, g.ksize, kept)
    tb = 17  # several blocks, the last one partial
    # forward, as CudaBackend.forward
    y = np.empty((g.N, K, *g.out), np.float32)
    V = np.empty(nk * C * tb, np.float32)
    M = np.empty(nk * K * tb, np.float32)
    for t0 in range(0, T, tb):
        n = min(tb, T - t0)
        emu.emu_input_transform(P(x), P(gdev), *pin.args(), LL(t0), LL(n), P(V))
        gemm(emu, nk, K, n, C, U, kept, K * C, C, 1, V, C * n, n, 1, M, None, K * n, n, 0)
        emu.emu_output_transform(P(M), LL(K), P(gdev), *pout.args(), LL(t0), LL(n), P(b), P(y))
    ref = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=4, padding=1, bias=b, columns=kept)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    # backward, as CudaBackend.backward
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    gx = np.zeros_like(x)
    gUk = np.zeros((nk, K, C), np.float32)
    gM = np.empty(nk * K * tb, np.float32)
    gV = np.empty(nk * C * tb, np.float32)
    Pp = np.empty(C * tb * 216, np.float32)
    for t0 in range(0, T, tb):
        n = min(tb, T - t0)
        emu.emu_output_adjoint(P(gy), LL(K), P(gdev), *pout.args(), LL(t0), LL(n), P(gM))
        gemm(emu, nk, C, n, K, U, kept, K * C, 1, C, gM, K * n, n, 1, gV, None, C * n, n, 0)
        emu.emu_input_adjoint_patches(P(gV), P(gdev), *pin.args(), LL(n), P(Pp))
        emu.emu_input_adjoint_gather(P(Pp), P(gdev), P(pin.dims), LL(t0), LL(n), P(gx))
        emu.emu_input_transform(P(x), P(gdev), *pin.args(), LL(t0), LL(n), P(V))
        gemm(emu, nk, K, C, n, gM, None, K * n, n, 1, V, C * n, 1, n, gUk, None, K * C, C, 1)
    rgx, rgU = pywino3d.winograd_conv3d_backward(gy, x, U, kernel_size=3, tile=4, padding=1, columns=kept)
    np.testing.assert_allclose(gx, rgx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gUk, rgU[kept], rtol=1e-4, atol=1e-3)
