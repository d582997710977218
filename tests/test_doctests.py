"""The examples in the policy library's docstrings run and show what they say."""

import doctest
import importlib
import pkgutil

import pytest

import bandits

MODULES = sorted(m.name for m in pkgutil.iter_modules(bandits.__path__, "bandits."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"
