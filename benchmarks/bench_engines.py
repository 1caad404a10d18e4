"""Whole MONAI networks on the engines a user would install for fast CPU
inference, against pywino3d (issue 28's benchmark).

Engines (each skipped, with a note, when its package is missing):

* ``torch``          -- eager PyTorch, the reference (speed-ups are over it);
* ``torch.compile``  -- inductor;
* ``onnxruntime``    -- ``torch.onnx.export(dynamo=False)``, ``intra_op_num_threads``;
* ``openvino``       -- ``ov.convert_model``, compiled for "CPU" with
  ``INFERENCE_NUM_THREADS``, ``PERFORMANCE_HINT=LATENCY`` and
  ``INFERENCE_PRECISION_HINT=f32`` (without it OpenVINO may run bf16);
* ``pywino3d``       -- ``pywino3d.torch.convert_model(example_inputs=x)``;
* ``pywino3d+compile`` -- the converted network under ``torch.compile``;
* ``pywino3d-fused`` -- ``pywino3d.torch.optimize(model, x)``: converted,
  then compiled with the ``"pywino3d"`` backend, which fuses
  normalizations, activations and residual adds into the convolutions.

Networks (random weights, ``eval``, batch 1, float32): MONAI ``BasicUNet``,
``UNet`` (16...256, 2 residual units), ``SegResNet`` (init_filters 16) on
1x1xS^3 (S = 96 by default), and ``sliding``: ``BasicUNet`` run by
``monai.inferers.sliding_window_inference`` (roi S^3, overlap 0.25) over a
1x1x(2S)^3 volume.

Everything runs in one process: each engine's preparation (export, convert,
compile, tuning) is timed once and reported apart; after one warm-up call per
engine the engines run in a rotating order for ``--repeat`` rounds, so a slow
phase of a shared machine hits every engine alike.  Cells give the median
time and the median over rounds of the per-round ratio torch / engine.  Every
engine's output is compared with eager torch (relative L2).  ``--profile``
adds the converted ``BasicUNet``'s time split from the torch profiler: the
share of pywino3d's own operators (``pywino3d::*``) against every other op.

Examples::

    python benchmarks/bench_engines.py                                   # all (long on 2 cores)
    python benchmarks/bench_engines.py --nets basicunet --repeat 3 --profile
    python benchmarks/bench_engines.py --quick                           # tiny volumes, a smoke run
    python benchmarks/bench_engines.py --md docs/benchmarks.md --plot docs/engines.png --json engines.json

With ``--md`` the table replaces the block between ``<!-- bench_engines:start -->``
and ``<!-- bench_engines:end -->`` of that file (appended when the markers are
absent).  The script clears ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` for
itself (it re-executes itself without them).
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
import warnings

_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _BLAS_VARS) and __name__ == "__main__":
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import md_blocks  # noqa: E402

START, END = "<!-- bench_engines:start -->", "<!-- bench_engines:end -->"
ENGINES = ("torch", "torch.compile", "onnxruntime", "openvino", "pywino3d", "pywino3d+compile", "pywino3d-fused")
#: The package an engine needs beyond torch (None: torch alone).
NEEDS = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino",)}


# ------------------------------------------------------------------ networks
def build(name, seed=0):
    """(model in eval mode, its input size S) for a network name."""
    from monai.networks.nets import BasicUNet, SegResNet, UNet

    torch.manual_seed(seed)
    if name in ("basicunet", "sliding"):
        net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2)
    elif name == "unet":
        net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256),
                   strides=(2, 2, 2, 2), num_res_units=2)
    elif name == "segresnet":
        net = SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=16)
    else:
        raise ValueError(f"nets: unknown network {name!r}")
    return net.eval()


NETS = ("basicunet", "unet", "segresnet", "sliding")


# ------------------------------------------------------------------ engines
def available(engine):
    """None when the engine can run here, else why not."""
    missing = [p for p in NEEDS.get(engine, ()) if importlib.util.find_spec(p) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install 'pywino3d[bench]')"
    return None


def prepare(engine, model, x, threads, workdir):
    """A callable ``f(tensor) -> tensor`` running ``model`` on ``engine``;
    ``x`` is an example input of the shape it will see."""
    if engine == "torch":
        return model
    if engine == "torch.compile":
        return torch.compile(model)
    if engine == "pywino3d":
        from pywino3d.torch import convert_model

        return convert_model(copy.deepcopy(model), example_inputs=x)
    if engine == "pywino3d+compile":
        from pywino3d.torch import convert_model

        return torch.compile(convert_model(copy.deepcopy(model), example_inputs=x))
    if engine == "pywino3d-fused":
        from pywino3d.torch import optimize

        return optimize(copy.deepcopy(model), x)
    if engine == "onnxruntime":
        import onnxruntime as ort

        path = os.path.join(workdir, f"model_{id(model)}_{tuple(x.shape)[-1]}.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), path, dynamo=False, input_names=["x"], output_names=["y"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        return lambda t: torch.from_numpy(sess.run(None, {"x": t.numpy()})[0])
    if engine == "openvino":
        import openvino as ov

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = ov.convert_model(model, example_input=x)
        compiled = ov.Core().compile_model(m, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                      "PERFORMANCE_HINT": "LATENCY",
                                                      "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        return lambda t: torch.from_numpy(np.array(request.infer([t.numpy()])[0]))
    raise ValueError(f"engines: unknown engine {engine!r}")


def runner(net, f, roi):
    """The call timed for ``net``: the network, or sliding-window inference
    with ``f`` as the predictor."""
    if net != "sliding":
        return f
    from monai.inferers import sliding_window_inference

    return lambda t: sliding_window_inference(t, roi_size=roi, sw_batch_size=1, predictor=f, overlap=0.25)


def rel_l2(a, b):
    a, b = a.double(), b.double()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def bench_net(net, engines, size, repeat, threads, log=print):
    model = build(net)
    roi = (size,) * 3
    x = torch.randn(1, 1, *((2 * size,) * 3 if net == "sliding" else roi), generator=torch.Generator().manual_seed(1))
    example = torch.randn(1, 1, *roi)  # what each engine is prepared for (one window when sliding)
    rows, calls, skipped = {}, {}, {}
    with tempfile.TemporaryDirectory() as workdir, torch.no_grad():
        for e in engines:
            why = available(e)
            if why is not None:
                skipped[e] = why
                continue
            t0 = time.perf_counter()
            try:
                f = prepare(e, model, example, threads, workdir)
                call = runner(net, f, roi)
                y = call(x)  # the warm-up (compiles what is compiled lazily)
            except Exception as exc:  # an engine that cannot take this network is reported, not fatal
                skipped[e] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
                continue
            calls[e] = call
            rows[e] = {"prep_s": time.perf_counter() - t0, "y": y, "times": []}
            log(f"  {net}: {e} ready ({rows[e]['prep_s']:.1f} s)")
        ref = rows["torch"]["y"] if "torch" in rows else None
        names = list(calls)
        for r in range(repeat if names else 0):
            order = names[r % len(names):] + names[:r % len(names)]
            for e in order:
                t0 = time.perf_counter()
                calls[e](x)
                rows[e]["times"].append(time.perf_counter() - t0)
    out = []
    for e in names:
        ts = rows[e]["times"]
        ratios = [a / b for a, b in zip(rows["torch"]["times"], ts)] if ref is not None else [float("nan")]
        out.append({"net": net, "engine": e, "input": "x".join(map(str, x.shape)), "ms": 1e3 * statistics.median(ts),
                    "speedup": statistics.median(ratios), "spread": [min(ratios), max(ratios)],
                    "prep_s": rows[e]["prep_s"], "rounds": len(ts),
                    "rel_l2": rel_l2(rows[e]["y"], ref) if ref is not None else float("nan")})
    for e, why in skipped.items():
        out.append({"net": net, "engine": e, "skipped": why})
    return out


def profile_split(size, threads, engine="pywino3d"):
    """(pywino3d's own operators' share of the converted (or, with
    ``engine="pywino3d-fused"``, optimized) BasicUNet's time, total op
    seconds, {op: seconds} of the ten largest other ops) from the torch
    profiler."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(1, 1, size, size, size)
    with torch.no_grad(), tempfile.TemporaryDirectory() as workdir:
        model = prepare(engine, build("basicunet"), x, threads, workdir)
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    ops = {ev.key: ev.self_cpu_time_total * 1e-6 for ev in prof.key_averages()}
    total = sum(ops.values())
    ours = sum(v for k, v in ops.items() if k.startswith("pywino3d::"))
    others = dict(sorted(((k, v) for k, v in ops.items() if not k.startswith("pywino3d::")),
                         key=lambda kv: -kv[1])[:10])
    return ours / total, total, others


# ------------------------------------------------------------------ output
def markdown(rows, args, split=None):
    done = [r for r in rows if "skipped" not in r]
    head = ["network", "input", "engine", "ms", "speed-up over torch [min, max]", "prepare s", "rel L2"]
    out = [START, "", f"Measured {time.strftime('%Y-%m-%d')} on {platform.processor() or platform.machine()}, "
           f"{args.threads} threads, torch {torch.__version__}, float32, batch 1, eval, "
           f"{done[0]['rounds'] if done else args.repeat} rounds in rotating engine order per network "
           "(median; speed-up = median of per-round torch / engine ratios). \"prepare\" is the one-off export, "
           f"conversion, compilation or tuning. Command: `{args.command}`.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in done:
        out.append(f"| {r['net']} | {r['input']} | {r['engine']} | {r['ms']:.0f} | {r['speedup']:.2f}× "
                   f"[{r['spread'][0]:.2f}, {r['spread'][1]:.2f}] | {r['prep_s']:.1f} | {r['rel_l2']:.1e} |")
    for r in rows:
        if "skipped" in r:
            out.append(f"\n{r['net']}, {r['engine']}: not run ({r['skipped']}).")
    for e, (share, total, others) in (split or {}).items():
        out += ["", f"`BasicUNet` under `{e}`, time split (torch profiler, one eval call, {total * 1e3:.0f} ms of "
                f"op self time): pywino3d's operators {100 * share:.0f} %; the largest others: "
                + ", ".join(f"`{k}` {100 * v / total:.0f} %" for k, v in others.items()) + "."]
    if args.plot:
        out += ["", f"![engines]({pathlib.Path(args.plot).name})"]
    out += ["", END]
    return "\n".join(out)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if "skipped" not in r]
    nets = list(dict.fromkeys(r["net"] for r in done))
    engines = list(dict.fromkeys(r["engine"] for r in done))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(nets) + 2), 4))
    width = 0.8 / max(1, len(engines))
    for j, e in enumerate(engines):
        vals = [next((r["speedup"] for r in done if r["net"] == n and r["engine"] == e), 0.0) for n in nets]
        ax.bar([i + j * width for i in range(len(nets))], vals, width, label=e)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(nets))], nets)
    ax.set_ylabel("speed-up over torch eager (×)")
    ax.legend(fontsize=8)
    ax.set_title("MONAI networks, CPU float32, batch 1, eval", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    ap.add_argument("--size", type=int, default=96, help="volume edge S (the sliding run covers 2S)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds per network")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="the converted BasicUNet's time split")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 32^3, one round, BasicUNet, torch and pywino3d (overridable)")
    ap.add_argument("--md", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args(argv)
    given = set(argv if argv is not None else sys.argv[1:])
    if args.quick:
        args.size = 32 if "--size" not in given else args.size
        args.repeat = 1 if "--repeat" not in given else args.repeat
        args.nets = ["basicunet"] if "--nets" not in given else args.nets
        args.engines = ["torch", "pywino3d"] if "--engines" not in given else args.engines
    if "torch" not in args.engines:
        args.engines = ["torch"] + args.engines  # the reference of every ratio
    args.command = "python benchmarks/bench_engines.py " + " ".join(argv if argv is not None else sys.argv[1:])
    torch.set_num_threads(args.threads)
    rows = []
    for net in args.nets:
        print(f"{net} ...", flush=True)
        rows += bench_net(net, args.engines, args.size, args.repeat, args.threads)
    split = {e: profile_split(args.size, args.threads, e) for e in ("pywino3d", "pywino3d-fused")
             if e in args.engines} if args.profile else None
    for r in rows:
        if "skipped" in r:
            print(f"{r['net']:10s} {r['engine']:18s} not run: {r['skipped']}")
        else:
            print(f"{r['net']:10s} {r['engine']:18s} {r['ms']:9.1f} ms  {r['speedup']:5.2f}x  "
                  f"prepare {r['prep_s']:6.1f} s  rel L2 {r['rel_l2']:.1e}")
    for e, (share, total, others) in (split or {}).items():
        print(f"BasicUNet under {e}: pywino3d operators {100 * share:.0f} % of {total * 1e3:.0f} ms op time; "
              + ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in others.items()))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"rows": rows, "split": split}, indent=1))
    if args.plot:
        plot(rows, args.plot)
    if args.md:
        md_blocks.write_block(args.md, markdown(rows, args, split), START, END,
                               'Whole networks against other engines (`benchmarks/bench_engines.py`)')
    return rows


if __name__ == "__main__":
    main()
