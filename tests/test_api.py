"""Array handling, special values, tile selection and workspace guard."""
import numpy as np
import pytest

import pywino3d
from pywino3d._backends.cpu._ext import _cpu
from pywino3d._backends.cpu import backend as _cpu_backend
from pywino3d._backends.cpu import common as _cpu_common
from pywino3d._choice.cost import choose_tile
from pywino3d.testing import conv3d_reference


@pytest.fixture
def xw(rng):
    x = rng.standard_normal((2, 3, 6, 7, 5))
    w = rng.standard_normal((4, 3, 3, 3, 3))
    return x, w


@pytest.mark.parametrize("layout", ["fortran", "strided", "negative", "readonly", "list"])
def test_layouts(xw, layout):
    x, w = xw
    ref = pywino3d.conv3d(x, w, padding=1, tile=2)
    if layout == "fortran":
        xx, ww = np.asfortranarray(x), np.asfortranarray(w)
    elif layout == "strided":
        big = np.zeros((2, 6, 12, 7, 10))
        big[:, ::2, ::2, :, ::2] = x
        xx, ww = big[:, ::2, ::2, :, ::2], w
        assert not xx.flags.c_contiguous
    elif layout == "negative":
        xx, ww = np.flip(np.flip(x, 2).copy(), 2), w  # a view with negative strides
        assert xx.strides[2] < 0
    elif layout == "readonly":
        xx, ww = x.copy(), w.copy()
        xx.flags.writeable = ww.flags.writeable = False
    else:
        xx, ww = x.tolist(), w.tolist()
    np.testing.assert_array_equal(pywino3d.conv3d(xx, ww, padding=1, tile=2), ref)


@pytest.mark.parametrize("padding", [0, 1, (0, 1, 2), "same", "valid"])
@pytest.mark.parametrize("ks", [(3, 3, 3), (1, 3, 3), (3, 1, 1), (2, 2, 2), (5, 5, 5), (2, 3, 4)])
def test_padding_modes_and_kernels(rng, padding, ks):
    x = rng.standard_normal((1, 2, 7, 6, 8))
    w = rng.standard_normal((2, 2, *ks))
    y = pywino3d.conv3d(x, w, padding=padding, tile=(2, 3, 4))
    ref = conv3d_reference(x, w, padding=padding)
    np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-9)
    if padding == "same":
        assert y.shape[2:] == x.shape[2:]


def test_same_even_kernel_matches_torch_convention(rng):
    # torch puts the extra padding element of an even kernel at the end
    x = rng.standard_normal((1, 1, 4, 4, 4))
    w = np.zeros((1, 1, 2, 2, 2))
    w[0, 0, 0, 0, 0] = 1.0
    y = pywino3d.conv3d(x, w, padding="same", tile=2)
    np.testing.assert_allclose(y, x)


def test_empty_batch_and_channels(rng):
    w = rng.standard_normal((4, 3, 3, 3, 3))
    y = pywino3d.conv3d(np.zeros((0, 3, 5, 5, 5)), w, padding=1)
    assert y.shape == (0, 4, 5, 5, 5)
    y = pywino3d.conv3d(np.zeros((1, 0, 5, 5, 5)), np.zeros((4, 0, 3, 3, 3)), np.arange(4.0), padding=1)
    np.testing.assert_array_equal(y, np.broadcast_to(np.arange(4.0).reshape(1, 4, 1, 1, 1), y.shape))
    U = pywino3d.filter_transform(w, 2)
    gx, gU = pywino3d.winograd_conv3d_backward(np.zeros((0, 4, 3, 3, 3)), np.zeros((0, 3, 5, 5, 5)), U,
                                               kernel_size=3, tile=2)
    assert gx.shape == (0, 3, 5, 5, 5) and not gU.any()


def test_empty_columns_gives_bias(xw):
    x, w = xw
    U = pywino3d.filter_transform(w, 2)
    y = pywino3d.winograd_conv3d(x, U, kernel_size=3, tile=2, bias=np.ones(4), columns=[])
    np.testing.assert_array_equal(y, 1.0)


@pytest.mark.parametrize("val", [np.nan, np.inf])
def test_nonfinite_propagate(xw, val):
    x, w = xw
    x = x.copy()
    x[0, 1, 3, 3, 2] = val
    y = pywino3d.conv3d(x, w, padding=1, tile=4)
    ref = conv3d_reference(x, w, padding=1)
    # every output whose window holds the bad value is non-finite
    assert np.all(~np.isfinite(y[~np.isfinite(ref)]))
    assert not np.isfinite(y[0]).all() and np.isfinite(y[1]).all()


def test_auto_tile_choices():
    # big layer: a real Winograd tile; 1x1x1 kernel: direct; float64 may go larger
    assert choose_tile((8, 28, 28), (3, 3, 3), 1, 256, 256, 4) in [(4, 4, 4), (3, 4, 4), (4, 3, 4), (4, 4, 3)]
    assert all(m + 2 <= 6 for m in choose_tile((8, 28, 28), (3, 3, 3), 1, 256, 256, 4))
    t = choose_tile((16, 56, 56), (1, 3, 3), 1, 64, 64, 4)
    assert t[1] > 1 and t[2] > 1


def test_auto_matches_oracle(xw):
    x, w = xw
    np.testing.assert_allclose(pywino3d.conv3d(x, w, padding=1), conv3d_reference(x, w, padding=1),
                               rtol=1e-9, atol=1e-9)


def test_small_workspace_blocks_agree(xw, monkeypatch):
    """Many small blocks (workspace limit) give the same bits as one block.
    Forced onto the blocked pipeline, the one that reads
    ``PYWINO3D_WORKSPACE_MB`` (at C = 3 ``pipeline="auto"`` picks the fused
    one, which does not); its per-block kernels count the blocks."""
    x, w = xw
    blocks = []
    for name in ("input_block", "output_adjoint_block"):
        real = getattr(_cpu, name)
        monkeypatch.setattr(_cpu, name, lambda *a, _real=real, _name=name: blocks.append(_name) or _real(*a))
    U = pywino3d.filter_transform(w, 2)
    with _cpu_backend.use_pipeline("blocked"):
        y1 = pywino3d.conv3d(x, w, padding=1, tile=2)
        gy = np.ones_like(y1)
        ga = pywino3d.winograd_conv3d_backward(gy, x, U, kernel_size=3, tile=2, padding=1)
        assert blocks == ["input_block", "output_adjoint_block", "input_block"]  # one block each
        del blocks[:]
        monkeypatch.setenv("PYWINO3D_WORKSPACE_MB", "0.001")
        assert _cpu_common.block_size(1000, 64 * 7, 8) < 10
        y2 = pywino3d.conv3d(x, w, padding=1, tile=2)
        n_forward = len(blocks)
        gb = pywino3d.winograd_conv3d_backward(gy, x, U, kernel_size=3, tile=2, padding=1)
    assert n_forward > 4 and blocks.count("output_adjoint_block") > 4
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_allclose(ga[0], gb[0], rtol=1e-12)
    # grad_U sums over the tiles block by block: another summation order, so
    # agreement to rounding on the scale of its terms (entries cancel to ~0)
    np.testing.assert_allclose(ga[1], gb[1], rtol=1e-12, atol=1e-13 * float(np.abs(x).sum()))
    np.testing.assert_allclose(y1, conv3d_reference(x, w, padding=1), rtol=1e-12, atol=1e-12)


def test_memory_guard(monkeypatch):
    monkeypatch.setattr(_cpu_common, "available_memory", lambda: 1 << 20)
    x = np.zeros((1, 1, 64, 64, 64), np.float32)
    w = np.zeros((8, 1, 3, 3, 3), np.float32)
    with pytest.raises(MemoryError, match="needs .* GiB but only"):
        pywino3d.conv3d(x, w, padding=1, tile=2)


def test_filter_transform_roundtrip_shapes(rng):
    w = rng.standard_normal((5, 4, 1, 3, 3))
    U = pywino3d.filter_transform(w, (1, 4, 4))
    assert U.shape == (1 * 6 * 6, 5, 4)
    # adjoint identity <T w, gU> == <w, T^T gU>
    gU = rng.standard_normal(U.shape)
    gw = pywino3d.filter_transform_backward(gU, (1, 3, 3), (1, 4, 4))
    np.testing.assert_allclose(np.vdot(U, gU), np.vdot(w, gw), rtol=1e-12)


def test_show_versions(capsys):
    pywino3d.show_versions()
    out = capsys.readouterr().out
    assert "openmp" in out and "backends available" in out
