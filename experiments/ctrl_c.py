"""Ctrl-C in the command-line tools: one line on standard error instead of a traceback, then the
end by SIGINT, as shells expect of a command the user stopped (status 130; a shell loop around the
command stops too, which ``exit(130)`` would not do).

``homesim`` (:func:`experiments.run.cli`) names the directory to finish; the other tools wrap their
``main`` in :func:`one_line_on_ctrl_c` with what is left behind.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable, NoReturn, TypeVar

F = TypeVar("F", bound=Callable)

#: The tools that write files (plot, report, evaluate, calibrate) write each one under a temporary
#: name and rename it into place when it is whole.
FILES_WHOLE = ("interrupted: every file written so far is whole (each is renamed into place when "
               "complete); run the command again to finish")
#: The benchmarks write their ``--json`` file at the end only.
NOTHING_WRITTEN = "interrupted: nothing was written (the --json file is written at the end)"
#: A tool that only prints.
PRINTS_ONLY = "interrupted"


def exit_by_sigint() -> NoReturn:
    """Re-raise the KeyboardInterrupt without Python's traceback: the interpreter then cleans up
    (atexit, joblib's pool) and ends by SIGINT."""
    hook = sys.excepthook
    sys.excepthook = lambda kind, value, tb: None if issubclass(kind, KeyboardInterrupt) else hook(kind, value, tb)
    raise KeyboardInterrupt


def quiet_ctrl_c_in_callbacks() -> None:
    """Drop Python's report of a Ctrl-C that lands inside a C callback.

    Numba compiling a kernel (the first run after a checkout) calls back into Python through
    ctypes; a KeyboardInterrupt raised there cannot propagate, and Python prints "Exception
    ignored on calling ctypes callback function" with a traceback before the command's own
    line. Every other unraisable exception still goes to the previous hook. Idempotent."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_ctrl_c", False):
        return

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous(unraisable)

    hook.drops_ctrl_c = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def one_line_on_ctrl_c(message: str) -> Callable[[F], F]:
    """Decorate a command's ``main``: on Ctrl-C, print ``message`` and end by SIGINT."""
    def decorate(main: F) -> F:
        @functools.wraps(main)
        def run(*args, **kwargs):
            quiet_ctrl_c_in_callbacks()
            try:
                return main(*args, **kwargs)
            except KeyboardInterrupt:
                print(message, file=sys.stderr)
                exit_by_sigint()
        return run  # type: ignore[return-value]
    return decorate
