"""A second process for a format's work: a large index checked on another core.

The child is a plain subprocess running one function of a format module, not
multiprocessing: Celery's pool processes are daemons, which may not have children. Values go
both ways pickled, over the child's stdin and stdout. A child that cannot start, dies or
fails, or whose answer does not arrive whole (a truncated or garbled pipe, a pickle that does
not load here) raises `ChildFailed` in the parent, which then does the work itself: the child
only ever saves time.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

#: What the child runs: read the function and its arguments, call it, write what it returns.
_BOOT = "from channels_app.formats.isolation import _child_main; _child_main()"

#: Ends the child's answer, with the answer's length: whatever else reached the pipe (a stray
#: print of an imported module, a half-written answer) fails the check instead of being
#: unpickled. At the end, so the answer streams out of the child without a copy.
_MAGIC = b"PSMCHILD"
_TRAILER = struct.Struct(">8sQ")

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
        except (pickle.PicklingError, TypeError, AttributeError) as exc:  # cannot be sent
            raise ChildFailed(f"the value cannot be handed to the child: {exc}") from None

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
        return _answer(output)

    def close(self) -> None:
        """End the conversation and wait for the child (a child blocked writing its result
        fails on the closed pipe)."""
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):  # a write left over for a dead child
                pipe.close()
        self.process.wait()

    def stop(self) -> None:
        """End the child now, whatever it is doing: its answer, if any, is not wanted."""
        with contextlib.suppress(OSError):  # ended already
            self.process.kill()
        self.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _answer(output: bytes) -> Any:
    """The value a child wrote (see `_child_main`); ChildFailed unless it arrived whole and
    loads: anything may be in a pipe or pickle, but a run must not fail for it."""
    body = len(output) - _TRAILER.size
    if body <= 0:
        raise ChildFailed(f"the child's answer is cut short ({len(output)} bytes)")
    magic, length = _TRAILER.unpack_from(output, body)
    if magic != _MAGIC or length != body:
        raise ChildFailed("the child's answer is garbled or cut short")
    try:
        return pickle.loads(memoryview(output)[:body])
    except Exception as exc:  # a pickle that does not load here raises almost anything
        raise ChildFailed(f"the child's answer does not load: {exc!r}") from None


def _receive() -> Any:
    return pickle.load(sys.stdin.buffer)


def _child_main() -> None:
    """In the child: run the function the parent names; its result goes to the parent's pipe,
    framed (see `_TRAILER`). The function's own prints go to stderr, not into the answer."""
    answer = _Counted(os.fdopen(os.dup(sys.stdout.fileno()), "wb"))
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    module, name, args = _receive()
    function = getattr(importlib.import_module(module), name)
    pickle.dump(function(_receive, *args), answer, protocol=5)
    answer.file.write(_TRAILER.pack(_MAGIC, answer.written))
    answer.file.close()
    # Ended at once: tearing down what the work built (hundreds of thousands of objects) would
    # only keep the parent waiting for the exit.
    sys.stderr.flush()
    os._exit(0)


class _Counted:
    """A pipe that counts what is written to it (a pipe has no `tell`)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.written = file, 0

    def write(self, data: bytes) -> int:
        self.written += memoryview(data).nbytes
        return self.file.write(data)
