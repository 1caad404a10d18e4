"""Where the CUDA sources live and which kernel instantiations exist.

This module does not import CuPy: the NVRTC compile check of CPU-only CI
uses it too.  The sources are ``src/cuda/*.cu`` plus the shared headers of
``src/``; ``pip install .`` installs them as this package's data in
``kernels/`` beside this module (``setup.py``'s ``KERNEL_DEST``); a source
checkout or an editable install reads ``src/`` itself.
"""
from __future__ import annotations

import os
from pathlib import Path

#: Scratch-size classes: kernels are compiled for AMAX in this list, the
#: smallest class >= max(alpha, n) over the axes is used.
AMAX_CLASSES = (4, 6, 8, 10, 14)
TYPES = ("float", "double")
#: (BM, BN, BK, TM, TN) of the shared-memory sparse GEMM per type.
GEMM_TILES = {"float": (64, 64, 8, 4, 4), "double": (32, 32, 8, 2, 2)}
TILE_KERNELS = ("input_transform", "output_transform", "output_adjoint",
                "input_adjoint_patches", "filter_transform")
KERNEL_FILE = "wino3d_kernels.cu"
HEADERS = ("wino3d_common.h", "wino3d_tile.h", "wino3d_tile.template.h", "wino3d_fusion.h")


def kernel_dir():
    """Folder holding wino3d_kernels.cu and the shared headers."""
    here = Path(__file__).resolve().parent
    for cand in (here / "kernels", here.parents[2] / "src"):
        if (cand / KERNEL_FILE).exists() or (cand / "cuda" / KERNEL_FILE).exists():
            return cand
    raise FileNotFoundError(
        "pywino3d: CUDA sources not found (expected pywino3d/_backends/cuda/kernels/ in an installed "
        "package or src/ in a source checkout)")


def kernel_path():
    d = kernel_dir()
    p = d / KERNEL_FILE
    return p if p.exists() else d / "cuda" / KERNEL_FILE


def include_dirs():
    d = kernel_dir()
    return [str(d)]


def kernel_source():
    return kernel_path().read_text()


def amax_class(amax):
    for a in AMAX_CLASSES:
        if amax <= a:
            return a
    raise ValueError(f"tile: alpha {amax} exceeds the largest CUDA class {AMAX_CLASSES[-1]}")


def tile_kernel_name(kernel, ctype, amax):
    return f"{kernel}<{ctype},{amax_class(amax)}>"


def gemm_kernel_name(ctype):
    bm, bn, bk, tm, tn = GEMM_TILES[ctype]
    return f"sparse_gemm<{ctype},{bm},{bn},{bk},{tm},{tn}>"


def kernel_names():
    """Every template instantiation the library launches (name_expressions)."""
    names = []
    for t in TYPES:
        for a in AMAX_CLASSES:
            names += [f"{k}<{t},{a}>" for k in TILE_KERNELS]
        names.append(f"input_adjoint_gather<{t}>")
        names.append(gemm_kernel_name(t))
    return names


def compile_options(arch=None):
    opts = ["-std=c++17"] + [f"-I{d}" for d in include_dirs()]
    if arch:
        opts.append(f"--gpu-architecture={arch}")
    return opts


def nvrtc_compile(arch="compute_90"):
    """Compile every instantiation with NVRTC (cuda-bindings); no GPU needed.

    Returns ``{name_expression: lowered_name}``; raises RuntimeError with the
    compiler log on failure.
    """
    from cuda.bindings import nvrtc

    def check(res):
        err = res[0]
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise RuntimeError(f"NVRTC error {err}")
        return res[1:] if len(res) > 2 else (res[1] if len(res) == 2 else None)

    src = kernel_source().encode()
    headers = [(kernel_dir() / h) for h in HEADERS]
    hdr_src = [h.read_bytes() for h in headers]
    hdr_names = [h.name.encode() for h in headers]
    prog = check(nvrtc.nvrtcCreateProgram(src, KERNEL_FILE.encode(), len(headers), hdr_src, hdr_names))
    names = kernel_names()
    for n in names:
        check(nvrtc.nvrtcAddNameExpression(prog, n.encode()))
    opts = [o.encode() for o in compile_options(arch)]
    res = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    size = check(nvrtc.nvrtcGetProgramLogSize(prog))
    # A fresh writable buffer: NVIDIA's samples pass ``b" " * size``, which for
    # an empty log (size 1) is the interpreter's shared one-byte object, and
    # NVRTC's terminating NUL then turns every b" " in the process into b"\0".
    log = bytearray(size)
    nvrtc.nvrtcGetProgramLog(prog, log)
    if res[0] != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError("NVRTC compilation failed:\n" + bytes(log).rstrip(b"\0").decode(errors="replace"))
    lowered = {}
    for n in names:
        low = check(nvrtc.nvrtcGetLoweredName(prog, n.encode()))
        lowered[n] = low.decode() if isinstance(low, bytes) else str(low)
    check(nvrtc.nvrtcDestroyProgram(prog))
    return lowered


def nvcc_compile(arch="compute_90", nvcc="nvcc", workdir=None):
    """Compile every instantiation to PTX with ``nvcc -ptx`` (where present)."""
    import subprocess
    import tempfile

    names = kernel_names()
    lines = [f'#include "{KERNEL_FILE}"', "void *pywino3d_all_kernels[] = {"]
    lines += [f"    (void *)&{n}," for n in names]
    lines.append("};")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        src = os.path.join(tmp, "all_kernels.cu")
        with open(src, "w") as f:
            f.write("\n".join(lines) + "\n")
        cmd = [nvcc, "-std=c++17", f"-arch={arch}", "-ptx", "-I", str(kernel_path().parent),
               *[f"-I{d}" for d in include_dirs()], src, "-o", os.path.join(tmp, "out.ptx")]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError("nvcc failed:\n" + res.stderr)
        ptx = open(os.path.join(tmp, "out.ptx")).read()
    return ptx
