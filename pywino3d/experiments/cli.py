"""Command line of the experiments: ``python -m pywino3d experiment [options]``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re


def build_parser():
    """The argument parser; a new study adds its options here and a branch in :func:`main`.

    Examples
    --------
    >>> from pywino3d.experiments.cli import build_parser
    >>> a = build_parser().parse_args(["--quick", "--jobs", "2"])
    >>> a.quick, a.jobs
    (True, 2)
    """
    from . import reproduction

    ap = argparse.ArgumentParser(prog="python -m pywino3d experiment", description=reproduction.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run with tiny sizes")
    ap.add_argument("--out", default=None,
                    help="folder for experiments.md, experiment.png and experiment.json (default: docs/ when it "
                         "exists and the run is not --quick, else nothing is written and nothing is resumed)")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5; 2 with --quick)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 6)")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel, one process each (default 1)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads per run (default: cores // jobs)")
    ap.add_argument("--cache-dir", default=None,
                    help="where pruning start models are kept between runs (default: a folder in the temp dir)")
    ap.add_argument("--fresh", action="store_true", help="ignore finished runs in the JSON and start over")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--pruning", action="store_true",
                    help="one-shot pruning study of a trained network (pywino3d.experiments.pruning_study)")
    ap.add_argument("--protocol", choices=("robust", "v1"), default="robust",
                    help="the reproduction's protocol: robust (default: 10 seeds, learning rates over 2 tuning "
                         "seeds) or v1 (the published tables of 2026-11-26: 5 seeds, 1 tuning seed)")
    ap.add_argument("--segmentation", action="store_true",
                    help="3-D segmentation study: pruned networks against thinner ones at matched time "
                         "(pywino3d.experiments.segmentation)")
    ap.add_argument("--pass-name", default="a",
                    help="name of this pass (default a); run a second pass, e.g. b, under another machine setup "
                         "(another thread count, and a build of the kernels for another vector width) and the "
                         "report calls a verdict robust only where every pass agrees (docs/experiments.md)")
    return ap


def main(argv=None):
    """Run the experiment selected by ``argv`` (see ``--help``); resumes from the JSON.

    Examples
    --------
    >>> from pywino3d.experiments.cli import main
    >>> main(["--help"])  # doctest: +SKIP
    """
    from . import reproduction

    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        raise SystemExit(f"--jobs: expected >= 1, got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"--threads: expected >= 1, got {args.threads}")
    if args.segmentation and args.pruning:
        raise SystemExit("--segmentation, --pruning: choose one study")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,20}", args.pass_name):
        raise SystemExit(f"--pass-name: expected 1-20 letters, digits, '-' or '_', got {args.pass_name!r}")
    if args.segmentation:
        return _segmentation(args)
    cfg = reproduction.Config.quick() if args.quick else (reproduction.Config.v1() if args.protocol == "v1"
                                                           else reproduction.Config())
    if args.seeds is not None:
        if args.seeds < 2:
            raise SystemExit("--seeds: need at least 2 seeds for intervals")
        cfg = dataclasses.replace(cfg, seeds=tuple(range(args.seeds)))
    if args.epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=args.epochs)
    out = args.out if args.out is not None else ("docs" if os.path.isdir("docs") and not args.quick else None)
    if args.pruning:
        from . import pruning_study

        kw = {} if not out else dict(out_md=os.path.join(out, "experiments.md"),
                                     out_png=os.path.join(out, "experiment_pruning.png"),
                                     out_json=os.path.join(out, "experiment_pruning.json"))
        pruning_study.run(quick=args.quick, jobs=args.jobs, threads=args.threads, fresh=args.fresh,
                          progress=not args.no_progress, **kw)
        return 0
    out_json = reproduction.pass_json(out, args.pass_name) if out else None
    if out_json and args.fresh and os.path.exists(out_json):
        os.remove(out_json)
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    results = reproduction.run(cfg, out_json=out_json, cache_dir=args.cache_dir, jobs=args.jobs, threads=threads,
                               progress=not args.no_progress)
    if args.pass_name != "a":  # the report is pass a's, with the verdicts of every other pass
        a_json = reproduction.pass_json(out, "a") if out else None
        if not a_json or not os.path.exists(a_json):
            print(f"pass {args.pass_name} finished; the report is written once pass a is there")
            return 0
        with open(a_json) as f:
            results = json.load(f)
        if results.get("config") != cfg.to_json():
            print(f"pass {args.pass_name} finished; pass a in {out} has another configuration: no report")
            return 0
    others = reproduction.load_other_passes(out, results) if out else []
    text = reproduction.report(results, others)
    print(text)
    if out:
        os.makedirs(out, exist_ok=True)
        reproduction.write_markdown(os.path.join(out, "experiments.md"), text)
        reproduction.plot(results, os.path.join(out, "experiment.png"))
    return 0


def _segmentation(args):
    from . import segmentation

    cfg = segmentation.SegConfig.quick() if args.quick else segmentation.SegConfig()
    if args.seeds is not None:
        if args.seeds < 2:
            raise SystemExit("--seeds: need at least 2 seeds for intervals")
        cfg = dataclasses.replace(cfg, seeds=tuple(range(args.seeds)))
    if args.epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=args.epochs)
    out = args.out if args.out is not None else ("docs" if os.path.isdir("docs") and not args.quick else None)
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    segmentation.main(cfg, out=out, pass_name=args.pass_name, jobs=args.jobs, threads=threads, fresh=args.fresh,
                      progress=not args.no_progress, cache_dir=args.cache_dir)
    return 0
