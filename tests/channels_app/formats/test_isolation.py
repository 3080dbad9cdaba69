"""The second process a format may hand work to (`channels_app/formats/isolation.py`)."""

from __future__ import annotations

import os

import pytest

from channels_app.formats import FormatError
from channels_app.formats.isolation import Child, ChildFailed, Receive


def _total(receive: Receive, start: int) -> tuple[int, int]:
    """In the child: add what the parent sends to `start`; say which process did it."""
    return start + sum(receive()), os.getpid()


def _fail(receive: Receive, how: str) -> FormatError:
    if how == "exit":
        os._exit(3)
    return FormatError("URL [removed]", "must be a list")


def test_a_child_runs_the_function_with_what_the_parent_sends():
    with Child(_total, 1) as child:
        child.send([2, 3])
        total, pid = child.result()
    assert total == 6 and pid != os.getpid()


def test_a_child_that_dies_fails_and_a_format_error_comes_back_whole():
    with Child(_fail, "exit") as child, pytest.raises(ChildFailed):
        child.result()
    with Child(_fail, "error") as child:
        error = child.result()
    assert (error.where, error.reason) == ("URL [removed]", "must be a list")
