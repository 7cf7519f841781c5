"""The ``Examples:`` in docstrings run as tests: every ``fastssim`` module, and every ``examples`` module that has any.

Modules are found by walking the packages, so a new module's doctests join the
suite without editing this file. Doctests are written for the CPU and print
rounded numbers, so they hold on every backend the CPU runs.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from types import ModuleType

import pytest

import examples
import fastssim


def _modules(package: ModuleType) -> list[ModuleType]:
    """``package`` and every module below it, imported."""
    names = [package.__name__] + [info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    return [importlib.import_module(name) for name in names]


def _doctests(module: ModuleType) -> list[doctest.DocTest]:
    """The docstring examples defined in ``module`` itself (not those of names it imports)."""
    return [test for test in doctest.DocTestFinder().find(module) if test.examples]


DOCTESTS = [test for package in (fastssim, examples) for module in _modules(package) for test in _doctests(module)]


def test_the_public_api_has_doctests() -> None:
    """Guards the walk above: if it found nothing, the parametrised test below would pass vacuously."""
    names = {test.name for test in DOCTESTS}
    assert {"fastssim.functional.ssim", "fastssim.modules.SSIMLoss"} <= names


@pytest.mark.parametrize("test", DOCTESTS, ids=lambda test: test.name)
def test_docstring_examples(test: doctest.DocTest) -> None:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {test.name} failed (output above)"
