"""Command line of the experiments: ``python -m pywino3d experiment [options]``."""
from __future__ import annotations

import argparse
import os


def build_parser():
    """The argument parser; studies add their options here.

    Examples
    --------
    >>> from pywino3d.experiments.cli import build_parser
    >>> build_parser().parse_args(["--quick"]).quick
    True
    """
    from . import reproduction

    ap = argparse.ArgumentParser(prog="python -m pywino3d experiment", description=reproduction.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few steps")
    ap.add_argument("--out", default=None, help="folder for experiments.md and experiment.png "
                    "(default: docs/ when it exists, else nothing is written)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: 8)")
    ap.add_argument("--pruning", action="store_true",
                    help="one-shot pruning study of a trained network (pywino3d.experiments.pruning_study)")
    return ap


def main(argv=None):
    """Run the experiment named by ``argv`` (see ``--help``).

    Examples
    --------
    >>> from pywino3d.experiments.cli import main
    >>> main(["--help"])  # doctest: +SKIP
    """
    from . import reproduction

    args = build_parser().parse_args(argv)
    out = args.out if args.out is not None else ("docs" if os.path.isdir("docs") and not args.quick else None)
    if args.pruning:
        from . import pruning_study

        kw = {} if not out else dict(out_md=os.path.join(out, "experiments.md"),
                                     out_png=os.path.join(out, "experiment_pruning.png"),
                                     out_json=os.path.join(out, "experiment_pruning.json"))
        pruning_study.run(quick=args.quick, **({} if args.epochs is None else {"epochs": args.epochs}), **kw)
        return 0
    kw = {}
    if out:
        kw = dict(out_md=os.path.join(out, "experiments.md"), out_png=os.path.join(out, "experiment.png"),
                  out_json=os.path.join(out, "experiment.json"))
    reproduction.run(quick=args.quick, epochs=8 if args.epochs is None else args.epochs, **kw)
    return 0
