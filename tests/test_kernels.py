"""Kernel-level tests of the CPU extension's building blocks: the geometry
struct, the compile-time facts it exports."""
import numpy as np
import pytest

from pywino3d import _cpu
from pywino3d._geometry import GEOM_DTYPE, geom_record, make_geometry


def _geometry():
    return make_geometry((2, 3, 5, 6, 7), 4, (3, 2, 1), (1, 0, 2), (4, 2, 3))


def test_geom_struct_layout_matches_numpy_record():
    """The C struct, the Cython wrapper and the NumPy record the CUDA kernels
    receive by value agree field by field (name, offset, size)."""
    layout = _cpu.geom_layout()
    assert layout.pop("sizeof") == GEOM_DTYPE.itemsize
    assert list(layout) == list(GEOM_DTYPE.names)
    for name, off in layout.items():
        assert GEOM_DTYPE.fields[name][1] == off, name


def test_geom_filled_by_name():
    g = _geometry()
    fields = g.c_fields((630, 210, 42, 7, 1))
    back = _cpu.CGeom(fields).fields()
    rec = geom_record(fields)
    for name in GEOM_DTYPE.names:
        want = np.atleast_1d(fields[name]).tolist()
        assert np.atleast_1d(back[name]).tolist() == want, name
        assert np.atleast_1d(rec[name]).tolist() == want, name
    assert back["K"] == 4 and back["pad"] == [1, 0, 2] and back["a"] == [6, 3, 3]
    assert back["nt"] == list(g.ntiles_axis)


def test_geom_rejects_missing_field():
    fields = _geometry().c_fields((630, 210, 42, 7, 1))
    del fields["nt"]
    with pytest.raises((KeyError, ValueError)):
        _cpu.CGeom(fields)
    with pytest.raises((KeyError, ValueError)):
        geom_record(fields)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_build_facts(dtype):
    vbytes = _cpu.simd_bytes()
    assert vbytes in (32, 64)
    b = _cpu.gemm_blocking(dtype)
    lanes = vbytes // np.dtype(dtype).itemsize
    assert b["nr"] == 2 * lanes
    assert b["mc"] % b["mr"] == 0 and b["nc"] % b["nr"] == 0 and b["kc"] > 0
