"""Run the numpydoc examples of every public module as tests."""
import doctest
import importlib

import pytest

MODULES = ["pywino3d._api", "pywino3d._transforms", "pywino3d.testing", "pywino3d._info",
           "pywino3d._backend", "pywino3d.lowrank", "pywino3d.pruning", "pywino3d.torch"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert res.attempted > 0, f"{name} has no examples"
    assert res.failed == 0
