"""Run the numpydoc examples of every public module as tests."""
import doctest
import importlib

import pytest

MODULES = ["pywino3d._api", "pywino3d._core.transforms", "pywino3d.testing", "pywino3d._info",
           "pywino3d._backends.dispatch", "pywino3d.lowrank", "pywino3d.pruning", "pywino3d._choice",
           "pywino3d._choice.names", "pywino3d.torch.functional", "pywino3d.torch.conv", "pywino3d.torch.winograd",
           "pywino3d.torch.convert", "pywino3d.torch.pruning",
           "pywino3d.experiments.data",
           "pywino3d.experiments.models", "pywino3d.experiments.training", "pywino3d.experiments.cli",
           "pywino3d.experiments.stats", "pywino3d.experiments.reproduction", "pywino3d.experiments.volumes",
           "pywino3d.experiments.runner", "pywino3d.experiments.segmentation"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert res.attempted > 0, f"{name} has no examples"
    assert res.failed == 0


def test_every_public_function_has_an_example():
    import pywino3d
    import pywino3d.testing
    import pywino3d.torch

    missing = []
    for mod in (pywino3d, pywino3d.testing, pywino3d.torch):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj) and "Examples" not in (obj.__doc__ or ""):
                missing.append(f"{mod.__name__}.{name}")
    assert not missing, f"no Examples section: {missing}"
