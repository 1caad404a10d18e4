"""benchmarks/mutations.py (the deliberate bugs the suite must catch) still
applies to this source: every pattern is found exactly once, so the list
cannot rot silently when the code it mutates changes.  Running the
mutations themselves takes minutes and is not part of the suite."""
import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load():
    path = ROOT / "benchmarks" / "mutations.py"
    if not path.is_file():
        pytest.skip("benchmarks/ is not shipped with this copy of the tests")
    spec = importlib.util.spec_from_file_location("pywino3d_mutations", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_every_mutation_applies_exactly_once():
    mod = _load()
    assert len(mod.MUTATIONS) >= 10
    assert len({m.name for m in mod.MUTATIONS}) == len(mod.MUTATIONS)
    mod.check_all(ROOT)
    kinds = " ".join(m.name for m in mod.MUTATIONS)
    for kind in ("sign-Bt", "sign-G", "sign-At", "skip-tile", "drop-column", "bias", "0.3%", "grad-blocked"):
        assert kind in kinds, kind


def test_a_pattern_that_is_gone_or_doubled_is_reported(tmp_path):
    mod = _load()
    m = mod.MUTATIONS[0]
    with pytest.raises(ValueError, match="found 0 times"):
        mod._check_applies(m, "nothing here")
    with pytest.raises(ValueError, match="found 2 times"):
        mod._check_applies(m, m.old + "\n" + m.old)
