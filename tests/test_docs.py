"""Every public function has a numpydoc docstring whose examples run and give what they say."""

from __future__ import annotations

import doctest

import pytest

import jitloss


@pytest.mark.parametrize("name", jitloss.__all__)
def test_docstring_examples_run(name):
    fn = getattr(jitloss, name)
    doc = fn.__doc__ or ""
    assert "Examples" in doc and ">>>" in doc, f"{name} has no runnable example"
    for section in ("Parameters", "Returns"):
        assert section in doc, f"{name} lacks a {section} section"
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    for test in finder.find(fn, name, globs={}):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} failing example(s)"
