import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=50, **_common)
# CI=true: hypothesis loads its "ci" profile; ours keeps the same name.
settings.register_profile("ci", max_examples=100, derandomize=True, database=None,
                          print_blob=True, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# The autotune cache goes to a temporary directory for the whole session (and
# its subprocesses), never to the user's ~/.cache.  Tuning stays on, as users
# get it; tests that need bit-identical results pass explicit tiles.
_AUTOTUNE_DIR = tempfile.mkdtemp(prefix="pywino3d-autotune-")
os.environ["PYWINO3D_CACHE_DIR"] = _AUTOTUNE_DIR
atexit.register(shutil.rmtree, _AUTOTUNE_DIR, True)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ------------------------------------------------------------ backends
from pywino3d._backends.dispatch import cuda_status  # noqa: E402

CUDA_OK, CUDA_WHY = cuda_status()
#: Parametrise a test over both backends; GPU cases skip only when
#: cupy.cuda.is_available() is false (or CuPy is not installed).
BACKENDS = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not CUDA_OK, reason=CUDA_WHY)),
]


def on(backend, a):
    """Put a host array where ``backend`` computes."""
    if a is None or backend == "cpu":
        return a
    import cupy

    return cupy.asarray(a)


def host(a):
    """Bring a result back to NumPy."""
    if a is None or isinstance(a, np.ndarray):
        return a
    return a.get()


@pytest.fixture(autouse=True)
def _reset_backend_state():
    """Tests (and doctests) that call set_backend must not leak into others."""
    from pywino3d._backends import dispatch as _backend

    yield
    _backend._global = None


def same_to_rounding(actual, ref):
    """Relative L2 difference within a few hundred units of roundoff: two
    kernels that do the same sums in another order (or with FMAs formed
    elsewhere by the compiler)."""
    tol = 1e-5 if ref.dtype == np.float32 else 1e-13
    diff = np.linalg.norm(actual - ref)
    assert diff <= tol * np.linalg.norm(ref), f"relative difference {diff / np.linalg.norm(ref):.3g} > {tol}"
