"""A second process for a format's work: a large index checked on another core.

The child is a plain subprocess running one function of a format module, not
multiprocessing: Celery's pool processes are daemons, which may not have children. Values go
both ways pickled, over the child's stdin and stdout. A child that cannot start, dies or
fails raises `ChildFailed` in the parent, which then does the work itself: the child only
ever saves time.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from typing import Any

#: What the child runs: read the function and its arguments, call it, write what it returns.
_BOOT = "from channels_app.formats.isolation import _child_main; _child_main()"

#: Hands the child the next value its parent `send`s.
Receive = Callable[[], Any]


class ChildFailed(Exception):
    """The child process could not start or did not finish its work."""


class Child:
    """`function(receive, *args)` running in a child process; `send` it values, then read
    `result()`. Use as a context manager: leaving it ends the child."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        # The child imports the function by name: the parent's import path is handed down.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise ChildFailed(str(exc)) from None
        try:
            self.send((function.__module__, function.__qualname__, args))
        except ChildFailed:
            self.close()  # not entered as a context yet
            raise

    def send(self, value: Any) -> None:
        """Pass `value` to the child's next `receive()`."""
        try:
            pickle.dump(value, self.process.stdin, protocol=5)
            self.process.stdin.flush()
        except OSError as exc:  # the child died
            raise ChildFailed(str(exc)) from None

    def result(self) -> Any:
        """What the function returned; ChildFailed if the child died or raised."""
        try:
            self.process.stdin.close()  # a child still waiting for a value stops waiting
            output = self.process.stdout.read()
        except OSError as exc:
            raise ChildFailed(str(exc)) from None
        finally:
            self.close()
        if self.process.returncode != 0 or not output:
            raise ChildFailed(f"the child process ended with status {self.process.returncode}")
        return pickle.loads(output)

    def close(self) -> None:
        """End the conversation and wait for the child (a child blocked writing its result
        fails on the closed pipe)."""
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):  # a write left over for a dead child
                pipe.close()
        self.process.wait()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _receive() -> Any:
    return pickle.load(sys.stdin.buffer)


def _child_main() -> None:
    """In the child: run the function the parent names; its result goes to stdout."""
    module, name, args = _receive()
    function = getattr(importlib.import_module(module), name)
    pickle.dump(function(_receive, *args), sys.stdout.buffer, protocol=5)
