"""Time one benchmark script against two or more builds of pywino3d.

Each build is a folder holding a ``pywino3d`` package with its compiled
extensions (a copy of a built tree).  The script runs in a fresh process per
build and round, the builds alternating, so that the machine's slow and fast
phases fall on every side alike; each process prints one line, and the lines
are collected per build.

Every process starts in a neutral working directory: Python puts the working
directory first on the module path, so a process started in a source tree
imports that tree's build whatever ``PYTHONPATH`` says -- the mistake that
made earlier comparisons compare a build with itself (``docs/design.md``,
"How two builds are compared").  Before timing, each side is checked to
import the package from its own folder.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python benchmarks/compare_builds.py bench.py /tmp/build_a /tmp/build_b --rounds 3
"""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile


def imported_from(build, cwd):
    """The file ``import pywino3d`` loads with ``build`` on the module path."""
    env = dict(os.environ, PYTHONPATH=str(build))
    out = subprocess.run([sys.executable, "-c", "import pywino3d, sys; sys.stdout.write(pywino3d.__file__)"],
                         env=env, cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"builds: {build} has no importable pywino3d:\n{out.stderr[-1000:]}")
    return pathlib.Path(out.stdout).resolve()


def compare(script, builds, rounds):
    """{build: [output line per round]}; raises if a build imports another folder's package."""
    builds = [pathlib.Path(b).resolve() for b in builds]
    code = pathlib.Path(script).read_text()
    results = {b: [] for b in builds}
    with tempfile.TemporaryDirectory() as cwd:
        for b in builds:
            f = imported_from(b, cwd)
            if b not in f.parents:
                raise RuntimeError(f"builds: {b} imports pywino3d from {f}, not from itself")
        for _ in range(rounds):
            for b in builds:
                env = dict(os.environ, PYTHONPATH=str(b))
                out = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd,
                                     capture_output=True, text=True)
                if out.returncode:
                    raise RuntimeError(f"{script} failed on {b}:\n{out.stderr[-2000:]}")
                results[b].append(out.stdout.strip())
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("script", help="a Python file that prints one line of timings")
    ap.add_argument("builds", nargs="+", help="folders holding a built pywino3d package")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    for b, lines in compare(args.script, args.builds, args.rounds).items():
        print(f"{b}:")
        for line in lines:
            print(f"    {line}")


if __name__ == "__main__":
    main()
