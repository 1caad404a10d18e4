"""Build the CPU extension of pywino3d.

OpenMP is detected by compiling a tiny test program with the compiler that
setuptools will use.  Without OpenMP the build prints a loud warning and
produces a serial extension (results are identical, only slower).

Environment:
  PYWINO3D_PORTABLE=1   do not pass -march=native (for wheels that travel)
"""
import os
import sys
import tempfile
import textwrap
import warnings

import glob
import shutil

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

#: CUDA sources and the headers they share with the CPU build, shipped as
#: package data beside their loader, pywino3d/_backends/cuda/kernels/ (read by
#: pywino3d._backends.cuda.sources; an editable install reads src/ itself).
KERNEL_FILES = ["src/wino3d_common.h", "src/wino3d_tile.h", "src/wino3d_tile.template.h", "src/wino3d_fusion.h"] + sorted(
    glob.glob("src/cuda/*.cu"))

#: Where the compiled extensions live: one folder, ``pywino3d._backends.cpu._ext``.
EXT_DIR = "pywino3d/_backends/cpu/_ext"
#: Where the CUDA sources are installed (package data of the CUDA backend).
KERNEL_DEST = "pywino3d/_backends/cuda/kernels"

OMP_TEST = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 ? 0 : 1;
    }
    """
)


def _compiles(compiler, flags):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_test.c")
        with open(src, "w") as f:
            f.write(OMP_TEST)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, os.path.join(tmp, "omp_test"), extra_postargs=flags)
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        ctype = self.compiler.compiler_type
        if ctype == "msvc":
            base, omp = ["/O2"], ["/openmp"]
        else:
            base = ["-O3", "-std=c11", "-fno-strict-aliasing", "-ffp-contract=fast"]
            if os.environ.get("PYWINO3D_PORTABLE", "0") != "1" and _compiles(
                self.compiler, ["-march=native"]
            ):
                base.append("-march=native")
            omp = ["-fopenmp"]
        have_omp = _compiles(self.compiler, omp)
        if not have_omp:
            msg = (
                "\n" + "!" * 72 + "\n"
                "pywino3d: OpenMP was NOT found; building a SERIAL extension.\n"
                "Install an OpenMP runtime (e.g. libgomp with gcc, libomp with clang)\n"
                "and rebuild for multi-threaded kernels.\n" + "!" * 72
            )
            warnings.warn(msg)
            print(msg, file=sys.stderr)
            omp = []
        for ext in self.extensions:
            ext.extra_compile_args = base + omp + list(ext.extra_compile_args or [])
            ext.extra_link_args = omp + list(ext.extra_link_args or [])
        super().build_extensions()


class BuildPy(build_py):
    def run(self):
        super().run()
        dest = os.path.join(self.build_lib, *KERNEL_DEST.split("/"))
        os.makedirs(dest, exist_ok=True)
        for f in KERNEL_FILES:
            shutil.copy(f, dest)


extensions = [
    Extension(
        "pywino3d._backends.cpu._ext._cpu",
        sources=[f"{EXT_DIR}/_cpu.pyx", "src/cpu/wino3d_cpu.c"],
        include_dirs=["src", "src/cpu", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        depends=[f"{EXT_DIR}/_cpu.pxd", "src/wino3d_common.h", "src/wino3d_tile.h", "src/wino3d_tile.template.h",
                 "src/wino3d_fusion.h", *sorted(glob.glob(f"{EXT_DIR}/*.pxi")),
                 *sorted(glob.glob("src/cpu/*.h"))],
    ),
    Extension(
        "pywino3d._backends.cpu._ext._direct",
        sources=[f"{EXT_DIR}/_direct.pyx", "src/cpu/direct.c"],
        include_dirs=["src", "src/cpu", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        depends=[f"{EXT_DIR}/_cpu.pxd", "src/wino3d_common.h", "src/cpu/simd.h", "src/cpu/direct.h",
                 "src/cpu/direct.template.h", "src/cpu/template_names.h"],
    ),
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy},
)
