"""The second process a format may hand work to (`channels_app/formats/isolation.py`)."""

from __future__ import annotations

import os

import pytest

from channels_app.formats import FormatError
from channels_app.formats.isolation import Child, ChildFailed, Receive
from tests.fixtures.child_faults import print_banner_in_children


@pytest.fixture
def child_banner(tmp_path, monkeypatch):
    return print_banner_in_children(tmp_path, monkeypatch)


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


class _DiesWhilePickled:
    """Pickling it ends the child at once, status 0, its answer half written to the pipe."""

    def __reduce__(self):
        os._exit(0)


def _half_answer(receive: Receive) -> list:
    return [b"x" * 200_000, _DiesWhilePickled()]  # the bytes reach the pipe before the end


def _unloadable_answer(receive: Receive) -> int:
    class NotANumber(int):
        def __reduce__(self):
            return int, ("not a number",)  # fine here, ValueError in the parent's loads

    return NotANumber(1)


def _noisy(receive: Receive) -> int:
    print("a library's chatter on stdout")
    return 7


def test_an_answer_cut_short_by_a_child_exiting_cleanly_fails_the_child():
    with Child(_half_answer) as child, pytest.raises(ChildFailed, match="garbled or cut short"):
        child.result()


def test_an_answer_that_does_not_unpickle_fails_the_child():
    with Child(_unloadable_answer) as child, pytest.raises(ChildFailed, match="does not load"):
        child.result()


def test_what_the_function_prints_stays_out_of_its_answer():
    with Child(_noisy) as child:
        assert child.result() == 7


def test_garbage_in_the_pipe_before_the_answer_fails_the_child(child_banner):
    with Child(_total, 1) as child, pytest.raises(ChildFailed, match="garbled"):
        child.send([1])
        child.result()


def test_a_value_that_cannot_be_sent_fails_the_child():
    with Child(_total, 1) as child, pytest.raises(ChildFailed, match="cannot be handed"):
        child.send([lambda: 1])
