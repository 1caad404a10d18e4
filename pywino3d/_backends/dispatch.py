"""Backend selection: "cpu", "cuda" or "auto", swappable at runtime.

Precedence, highest first:

1. the per-call ``backend=`` argument;
2. ``with pywino3d.use_backend(name):`` (a :mod:`contextvars` context, so it
   is per thread and per asyncio task);
3. ``pywino3d.set_backend(name)`` (process-wide);
4. the ``PYWINO3D_BACKEND`` environment variable;
5. ``"auto"``: follow the type of ``x`` -- a CuPy array runs on the GPU, a
   NumPy array (or anything else) on the CPU.  CuPy is never imported for
   NumPy inputs.

Arrays are never moved implicitly between host and device: a forced backend
that does not match ``x`` raises :class:`TypeError` unless ``coerce=True``.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Protocol, runtime_checkable

from pywino3d._core.arrays import is_cupy_array
from pywino3d._core.env import getenv

NAMES = ("cpu", "cuda", "auto")

_context = contextvars.ContextVar("pywino3d_backend", default=None)
_global = None
_cpu_impl = None  # the CPU backend object, once get_impl("cpu") has imported it

#: Backend implementations by name; tests may register a fake one.
_REGISTRY = {}


@runtime_checkable
class Backend(Protocol):
    """What the public functions (``pywino3d._api``) need from a backend.

    The API layer validates every argument, answers trivial problems (empty
    output, nothing kept, no channel) and passes the backend only arrays that
    already live on its device.  A backend may set ``takes_ndarray = True``
    when a NumPy ndarray needs no ``asarray`` (the CPU backend).
    """

    name: str
    #: The array module of the device (numpy, cupy).
    xp: Any

    def owns(self, a) -> bool:
        """True when ``a`` is an array of this backend's device."""

    def asarray(self, name, a, coerce):
        """``a`` on this device: TypeError naming ``name`` if it lives elsewhere,
        unless ``coerce`` (then a copy)."""

    def to_own(self, a):
        """``a`` copied to this backend's array type (results under coerce)."""

    def resolve_workers(self, workers) -> int:
        """The thread count for ``workers=`` (validated)."""

    def filter_transform(self, w, tile, kept, nthreads, out=None):
        """U (npos, K, C) of the weights w (K, C, r_d, r_h, r_w), written into
        ``out`` (checked by the caller: shape, dtype, C order) when given."""

    def conv_weights(self, w, tile, kept, nthreads, g=None):
        """U for a one-shot conv3d of geometry ``g``: filter_transform's, or
        something the backend's ``forward`` reads in its place (tile 1 on the
        CPU: a read-only view of w; where the CPU's product transforms w
        itself: w, unfiltered)."""

    def filter_transform_backward(self, grad_U, ksize, tile, nthreads):
        """grad_w (K, C, *ksize) of grad_U (npos, K, C)."""

    def forward(self, g, x, U, bias, kept, nthreads):
        """y (N, K, *g.out) of a non-trivial problem of geometry g."""

    def backward(self, g, gy, x, U, kept, nthreads):
        """(grad_x, grad_U) of a non-trivial problem of geometry g."""


#: Members every backend must have (checked by :func:`register`).
BACKEND_MEMBERS = ("name", "xp", "owns", "asarray", "to_own", "resolve_workers", "filter_transform",
                   "conv_weights", "filter_transform_backward", "forward", "backward")


def as_backend(impl):
    """Return ``impl`` if it implements :class:`Backend`, else raise TypeError
    naming what is missing."""
    missing = [m for m in BACKEND_MEMBERS if not hasattr(impl, m)]
    if missing or not isinstance(impl, Backend):
        raise TypeError(f"backend: {type(impl).__name__} does not implement the backend protocol; "
                        f"missing {', '.join(missing)}")
    not_callable = [m for m in BACKEND_MEMBERS[2:] if not callable(getattr(impl, m))]
    if not_callable:
        raise TypeError(f"backend: {type(impl).__name__}.{not_callable[0]} must be callable")
    return impl


def _check_name(name, what="backend"):
    if not isinstance(name, str) or name not in NAMES and name not in _REGISTRY:
        raise ValueError(f"{what}: expected one of {NAMES}, got {name!r}")
    return name


def set_backend(name):
    """Set the process-wide backend ("cpu", "cuda" or "auto").

    Examples
    --------
    >>> import pywino3d
    >>> pywino3d.set_backend("cpu"); pywino3d.get_backend()
    'cpu'
    >>> pywino3d.set_backend("auto")
    """
    global _global
    _check_name(name)
    _global = name


@contextlib.contextmanager
def use_backend(name):
    """Context manager selecting the backend for the current thread/task.

    Examples
    --------
    >>> import pywino3d
    >>> with pywino3d.use_backend("cpu"):
    ...     pywino3d.get_backend()
    'cpu'
    """
    _check_name(name)
    token = _context.set(name)
    try:
        yield name
    finally:
        _context.reset(token)


def get_backend():
    """The backend name in force here (without a per-call override).

    Examples
    --------
    >>> import pywino3d
    >>> pywino3d.get_backend() in ("cpu", "cuda", "auto")
    True
    """
    name = _context.get()
    if name is None:
        name = _global
    if name is None:
        env = getenv("PYWINO3D_BACKEND")
        if env:
            return _check_name(env.strip().lower(), "PYWINO3D_BACKEND")
        name = "auto"
    return name


def cuda_status():
    """(available: bool, reason: str) for the CUDA backend."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return False, f"CuPy is not installed or failed to import ({exc}); pip install 'pywino3d[cuda]'"
    try:
        if not cupy.cuda.is_available():
            return False, "CuPy is installed but no CUDA GPU (or driver) is available"
    except Exception as exc:
        return False, f"CuPy cannot query the GPU: {exc}"
    return True, "ok"


def available_backends():
    """Names of the backends usable here: always "cpu", "cuda" with a GPU.

    Examples
    --------
    >>> import pywino3d
    >>> "cpu" in pywino3d.available_backends()
    True
    """
    names = ["cpu"]
    if cuda_status()[0]:
        names.append("cuda")
    return names


def resolve(backend, x):
    """Return the concrete backend name ("cpu"/"cuda"/registered) for this call."""
    name = _check_name(backend) if backend is not None else get_backend()
    if name == "auto":
        for key, impl in _REGISTRY.items():
            if key not in ("cpu", "cuda") and impl.owns(x):
                return key
        return "cuda" if is_cupy_array(x) else "cpu"
    return name


def get_impl(name):
    """The backend module/object implementing ``name``."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name == "cpu":
        global _cpu_impl
        if _cpu_impl is None:  # imported on first use; then one lookup per call
            from pywino3d._backends.cpu import backend as _cpu_backend

            _cpu_impl = _cpu_backend.BACKEND
        return _cpu_impl
    if name == "cuda":
        ok, why = cuda_status()
        if not ok:
            raise RuntimeError(f"backend 'cuda' requested but unavailable: {why}")
        from pywino3d._backends.cuda import backend as _cuda_backend

        return _cuda_backend.BACKEND
    raise ValueError(f"backend: expected one of {NAMES}, got {name!r}")


def register(name, impl):
    """Register a backend implementation (used by tests for a fake device);
    ``impl`` must implement :class:`Backend`."""
    if not isinstance(name, str) or not name or name == "auto":
        raise ValueError(f"name: expected a backend name other than 'auto', got {name!r}")
    _REGISTRY[name] = as_backend(impl)


def unregister(name):
    _REGISTRY.pop(name, None)
