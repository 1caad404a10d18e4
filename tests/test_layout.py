"""The package's layout rules (docs/design.md, "Map of the package"): no
import circle, the import-linter contracts of pyproject.toml, and one owner
for the algorithm choice -- every entry point gives the same problem the
same algorithm."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pywino3d
from pywino3d import _choice

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_graph():
    grimp = pytest.importorskip("grimp")
    return grimp.build_graph("pywino3d")


def _cycles(adj):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in adj:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_lazy_imports_included():
    g = _import_graph()
    adj = {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}
    assert len(adj) > 40  # the whole package was read, function-level imports included
    assert _cycles(adj) == []
    # the check itself can fail: a made-up back edge is found
    adj["pywino3d._core.geometry"] = adj["pywino3d._core.geometry"] | {"pywino3d._api"}
    assert _cycles(adj)


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (it is in the test extra)")
    out = subprocess.run([exe, "--config", os.path.join(ROOT, "pyproject.toml")], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "BROKEN" not in out.stdout and out.stdout.count("KEPT") >= 5


PROBLEMS = [  # (N, C, K, spatial, kernel)
    (1, 1, 16, (48, 48, 48), (3, 3, 3)),
    (1, 32, 32, (32, 32, 32), (3, 3, 3)),
    (1, 64, 64, (16, 16, 16), (3, 3, 3)),
    (2, 256, 256, (4, 14, 14), (3, 3, 3)),
    (1, 16, 16, (8, 40, 40), (1, 3, 3)),
    (1, 8, 8, (12, 12, 12), (5, 5, 5)),
]


@pytest.mark.parametrize("N,C,K,spatial,ksize", PROBLEMS)
def test_every_entry_point_chooses_the_same_algorithm(monkeypatch, N, C, K, spatial, ksize):
    """With nothing timed (PYWINO3D_AUTOTUNE=0: the only difference the
    design allows, see pywino3d._choice), conv3d, dask.conv3d, the torch
    layers and the volume demo pick one tile for one problem."""
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "0")
    from pywino3d._api import auto_tile

    x = np.zeros((N, C, *spatial), np.float32)
    w = np.zeros((K, C, *ksize), np.float32)
    pad = tuple(r // 2 for r in ksize)
    out = tuple(s + 2 * p - r + 1 for s, p, r in zip(spatial, pad, ksize))
    expected = _choice.model_tile(out, ksize, N, C, K, 4, "cpu")
    assert auto_tile(x, w, padding=pad) == expected

    da = pytest.importorskip("dask.array")
    import pywino3d.dask as pwd

    seen = []
    real = pywino3d.filter_transform
    monkeypatch.setattr(pwd._api, "filter_transform", lambda w, tile, **kw: seen.append(tuple(tile)) or real(w, tile, **kw))
    pwd.conv3d(da.from_array(x, chunks=x.shape), w, padding=pad)  # one chunk: the whole volume is the block
    assert seen == [expected]

    torch = pytest.importorskip("torch")
    from pywino3d.torch import algorithm as torch_plan

    torch_plan.clear()
    p = torch_plan.decide(x.shape, K, ksize, tuple(q for v in pad for q in (v, v)), torch.float32,
                          torch.device("cpu"), False, False, False)
    assert (p.algo, p.tile) == ("pywino3d", expected)

    if len(set(spatial)) == 1 and pad == (1, 1, 1):  # the demo's cubic chunks, "same" 3-wide layers
        from pywino3d._volume_demo import layer_tiles

        assert layer_tiles([(w, None)], spatial[0]) == [expected]


def test_choice_names_round_trip():
    for tile in [(1, 1, 1), (2, 2, 2), (4, 3, 6)]:
        assert _choice.parse_name(_choice.tile_name(tile)) == tile
    assert _choice.parse_name(_choice.TORCH) is None
    with pytest.raises(ValueError, match="name"):
        _choice.parse_name("nonsense")


def test_torch_candidates_are_the_cost_models_best_plus_direct():
    out, ksize = (32, 32, 32), (3, 3, 3)
    tiles = _choice.torch_candidates(out, ksize, 1, 32, 32, 4)
    assert tiles[-1] == (1, 1, 1) and len(tiles) == _choice.TORCH_TIMED_TILES + 1
    ranked = sorted((t for t in _choice.candidate_tiles(ksize, 4) if t != (1, 1, 1)),
                    key=lambda t: _choice.tile_cost(out, ksize, 1, 32, 32, t, 4))
    assert tiles[:-1] == ranked[:_choice.TORCH_TIMED_TILES]


def test_convert_model_runs_without_tqdm(monkeypatch):
    """tqdm is only in the torch extra: a user with torch alone still converts."""
    torch = pytest.importorskip("torch")
    from pywino3d.torch import Conv3d, convert_model

    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes "import tqdm" raise ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "0")
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3, padding=1))
    x = torch.randn(1, 2, 6, 6, 6)
    ref = net(x)
    convert_model(net, example_inputs=x)
    assert isinstance(net[0], Conv3d)
    torch.testing.assert_close(net(x), ref, rtol=1e-4, atol=1e-5)


def test_autotune_fingerprint_covers_every_compiled_extension(tmp_path):
    """The cache's build digest lists the extensions' folder, not names."""
    import importlib.machinery
    import importlib.util

    from pywino3d import autotune

    spec = importlib.util.find_spec(autotune.EXTENSIONS_PACKAGE)
    folder = spec.submodule_search_locations[0]
    exts = [f for f in os.listdir(folder) if f.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))]
    assert {f.split(".")[0] for f in exts} >= {"_cpu", "_direct"}
    assert len(autotune._build()) == 12
