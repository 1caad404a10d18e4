"""Deliberate bugs the test suite must catch (mutation testing by hand).

Each entry of :data:`MUTATIONS` is one small, realistic bug -- a wrong sign
of one transform coefficient (one per matrix: Bt, G, At of F(4, 3), in the
generated constants the C kernels use), a skipped tile, a dropped kept
position, a wrong bias, an error of 0.3 % confined to one output channel of
F(6^3) tiles, gradients 0.3 % too large for layers of more than 64 input
channels (the blocked backward) ...  For each one this script copies the
source tree into a scratch folder (never touching the real one), applies the
bug there, rebuilds the extension in the copy when the bug is in C or
Cython, runs the test files that should catch it (``pytest -x``, the
derandomised ``ci`` hypothesis profile) and records the first test that
failed.  It prints a table mutation -> killed / SURVIVED and exits with
status 1 if any mutation survived (or could not be applied or built).

The generated-header test (``test_const_transforms_header_is_generated``)
is deselected: it compares ``const_transforms.h`` with its generator's
output, so it would flag any edit of that file whatever the numbers do; a
mutation there must be caught by a test of the arithmetic.

Usage (from the repository root; about 10-20 minutes on 2 cores, mostly
the rebuilds of about a minute each)::

    python benchmarks/mutations.py            # all mutations
    python benchmarks/mutations.py --list     # names only
    python benchmarks/mutations.py --only bias-fused skip-tile-fused
    python benchmarks/mutations.py --keep     # keep the scratch copies

It is not part of pytest; ``tests/test_mutations.py`` only checks that
every mutation still applies to the current source (each pattern found
exactly once), so that this list cannot rot silently.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent

#: What a scratch copy holds (the tests need no more).
COPY = ["pywino3d", "src", "tests", "setup.py", "pyproject.toml", "README.md", "MANIFEST.in"]

#: Always deselected (see the module docstring).
DESELECT = ["tests/test_kernels.py::test_const_transforms_header_is_generated"]

#: The kernel-level files, in the order they usually fail fastest.
KERNEL_TESTS = ["tests/test_kernels.py", "tests/test_fused.py", "tests/test_fused_backward.py",
                "tests/test_accuracy.py", "tests/test_properties.py"]


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One deliberate bug: replace ``old`` (found exactly ``times`` times in
    ``path``: a bug repeated in every variant of the code, e.g. both vector
    widths' store) by ``new``, then run ``tests``."""

    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple = tuple(KERNEL_TESTS)
    times: int = 1

    @property
    def rebuild(self):
        return self.path.startswith("src/") or self.path.endswith((".pyx", ".pxi", ".pxd"))


MUTATIONS = [
    Mutation(
        "sign-Bt", "Bt of F(4, 3), float constants: sign of v4 in row 0 flipped",
        "src/cpu/const_transforms.h",
        "    out[0 * os] = (v0 + (v4 + -0x1.58e38e0000000p+1f * v2));",
        "    out[0 * os] = (v0 + (-v4 + -0x1.58e38e0000000p+1f * v2));"),
    Mutation(
        "sign-G", "G of F(4, 3), float constants: sign of the middle tap of rows 1 and 2 flipped",
        "src/cpu/const_transforms.h",
        "    const wino_vf o1 = 0x1.3f03f00000000p-1f * v1;",
        "    const wino_vf o1 = -0x1.3f03f00000000p-1f * v1;"),
    Mutation(
        "sign-At", "At of F(4, 3), float constants (forward output transform): sign of v5 in row 3 flipped",
        "src/cpu/const_transforms.h",
        "    out[3 * os] = (0x1.c71c720000000p-2f * d1_2 + (v5 + 0x1.8000000000000p+0f * d3_4));",
        "    out[3 * os] = (0x1.c71c720000000p-2f * d1_2 + (-v5 + 0x1.8000000000000p+0f * d3_4));"),
    Mutation(
        "skip-tile-fused", "fused forward: the last tile of every block is not written",
        "src/cpu/fused.template.h",
        "            /* output transform, one channel vector at a time */\n"
        "            for (wino_index r = 0; r < nt; ++r) {",
        "            /* output transform, one channel vector at a time */\n"
        "            for (wino_index r = 0; r < nt - (nt > 1); ++r) {"),
    Mutation(
        "skip-tile-blocked", "blocked forward: the first block of tiles is skipped when there are several",
        "pywino3d/_backends/cpu/pipelines/blocked.py",
        "    sc = scratch(sc_bytes)\n    for t0 in range(0, T, tb):",
        "    sc = scratch(sc_bytes)\n    for t0 in range(tb if T > tb else 0, T, tb):"),
    Mutation(
        "drop-column-fused", "fused forward: the product skips the last kept position",
        "src/cpu/fused.template.h",
        "            for (int i = 0; i < nk; ++i)\n                FN(fused_product)",
        "            for (int i = 0; i < nk - (nk > 1); ++i)\n                FN(fused_product)"),
    Mutation(
        "bias-fused", "fused forward, vector store (both the 16-lane and the transposing path): the last "
        "channel of each vector gets no bias",
        "src/cpu/fused.template.h",
        "        if (bias) memcpy(&b, bias, sizeof b);",
        "        if (bias) memcpy(&b, bias, sizeof b - sizeof(REAL));", times=2),
    Mutation(
        "bias-blocked", "blocked forward: each channel gets the previous channel's bias",
        "src/cpu/blocked.template.h",
        "            const REAL b = bias ? bias[k] : (REAL)0;",
        "            const REAL b = bias ? bias[k > 0 ? k - 1 : 0] : (REAL)0;"),
    Mutation(
        "channel0-F6-0.3%", "fused forward: output channel 0 of F(6^3) tiles 0.3 % too large",
        "src/cpu/fused.template.h",
        "                    FN(contractv_strided)(pout, (const VEC *)(M + r * ldm + k0), KP / VL, patch, t1, t2);",
        "                    FN(contractv_strided)(pout, (const VEC *)(M + r * ldm + k0), KP / VL, patch, t1, t2);\n"
        "                    if (k0 == 0 && md == 6 && mh == 6 && mw == 6)\n"
        "                        for (int q = 0; q < 216; ++q) patch[q][0] *= (REAL)1.003;"),
    Mutation(
        "grad-blocked-C>64-0.3%", "blocked backward: grad_x and grad_U 0.3 % too large when C > 64",
        "pywino3d/_backends/cpu/pipelines/blocked.py",
        "    if need_U:\n        gU[kept] = gUk\n    return gx, gU",
        "    if need_U:\n        gU[kept] = gUk\n"
        "    if C > 64:\n"
        "        gx = None if gx is None else gx * gx.dtype.type(1.003)\n"
        "        gU = None if gU is None else gU * gU.dtype.type(1.003)\n"
        "    return gx, gU"),
]


def _check_applies(m, text):
    n = text.count(m.old)
    if n != m.times:
        raise ValueError(f"{m.name}: pattern found {n} times in {m.path}, expected "
                         f"{'once' if m.times == 1 else f'{m.times} times'}")
    if m.new == m.old:
        raise ValueError(f"{m.name}: the replacement equals the pattern")


def check_all(root=ROOT):
    """Raise ValueError unless every mutation applies once to ``root``'s source."""
    for m in MUTATIONS:
        _check_applies(m, (pathlib.Path(root) / m.path).read_text())
        for t in m.tests:
            if not (pathlib.Path(root) / t).is_file():
                raise ValueError(f"{m.name}: test file {t} is missing")


def _run(cmd, cwd, env, log, timeout=3600):
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
        f.write(proc.stdout)
    return proc


def _env():
    env = dict(os.environ)
    env["HYPOTHESIS_PROFILE"] = "ci"
    env.pop("PYTHONPATH", None)
    return env


def _build(tree, env, log):
    proc = _run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--force"], tree, env, log)
    if proc.returncode != 0:
        raise RuntimeError(f"build failed in {tree} (see {log})")
    imp = _run([sys.executable, "-c", "import pywino3d; print(pywino3d.__file__)"], tree, env, log)
    where = imp.stdout.strip().splitlines()[-1] if imp.stdout.strip() else ""
    if imp.returncode != 0 or not pathlib.Path(where).resolve().is_relative_to(pathlib.Path(tree).resolve()):
        raise RuntimeError(f"the copy in {tree} imports pywino3d from {where!r}")


def _first_failure(output):
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ", 1)[1].split(" - ")[0]
    return None


def run_mutation(m, base, work, env):
    """Apply ``m`` in a copy of ``base``; returns (status, detail, seconds)."""
    t0 = time.perf_counter()
    tree = work / re.sub(r"[^A-Za-z0-9_.-]", "_", m.name)
    shutil.copytree(base, tree, symlinks=True)
    log = tree / "mutation.log"
    path = tree / m.path
    text = path.read_text()
    _check_applies(m, text)
    path.write_text(text.replace(m.old, m.new))
    try:
        if m.rebuild:
            _build(tree, env, log)
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests]
        for d in DESELECT:
            cmd += ["--deselect", d]
        proc = _run(cmd, tree, env, log)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return "ERROR", str(e), time.perf_counter() - t0
    if proc.returncode == 0:
        return "SURVIVED", "all selected tests passed", time.perf_counter() - t0
    if proc.returncode == 1:
        return "killed", _first_failure(proc.stdout) or "(failure line not found)", time.perf_counter() - t0
    return "ERROR", f"pytest exit status {proc.returncode} (see {log})", time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these mutations only")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copies")
    args = ap.parse_args(argv)
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:<24} {m.path:<32} {m.what}")
        return 0
    check_all()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.only and len(chosen) != len(args.only):
        ap.error(f"unknown mutation among {args.only}; --list shows the names")
    work = pathlib.Path(tempfile.mkdtemp(prefix="pywino3d-mutations-"))
    env = _env()
    results = []
    try:
        base = work / "base"
        base.mkdir()
        for name in COPY:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, base / name, ignore=shutil.ignore_patterns("__pycache__", "*.so", "build"))
            else:
                shutil.copy2(src, base / name)
        print(f"building the unmutated copy in {base} ...", flush=True)
        _build(base, env, work / "base.log")
        for m in chosen:
            print(f"{m.name} ...", flush=True)
            status, detail, secs = run_mutation(m, base, work, env)
            results.append((m, status, detail, secs))
            print(f"    {status}: {detail} ({secs:.0f} s)", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"scratch copies kept in {work}")
    print()
    print(f"{'mutation':<24} {'result':<9} {'seconds':>7}  first failing test")
    for m, status, detail, secs in results:
        print(f"{m.name:<24} {status:<9} {secs:>7.0f}  {detail}")
    bad = [m.name for m, status, *_ in results if status != "killed"]
    print(f"\n{len(results) - len(bad)} of {len(results)} mutations killed" + (f"; not killed: {bad}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
