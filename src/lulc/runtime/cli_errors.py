"""How a user mistake reaches the terminal: one line, the right exit code, no traceback.

Every command of every folder (runtime, training, export) wraps itself in
:func:`handle_errors`, so the same rule holds for all of them (README, "Safety").
"""
from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from lulc.runtime.core.errors import LulcError, SettingError

P = ParamSpec("P")
R = TypeVar("R")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn user mistakes into one line on stderr, no traceback: a wrong option (SettingError)
    is a usage error, exit code 2, like a wrong type click itself catches; any other LulcError
    (bad data, a wrong bundle, an unwritable output) exits 1.

    SIGTERM (a scheduler or `kill` stopping the run) is handled like Ctrl-C: the command
    stops cleanly and says what, if anything, can be resumed.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _interrupt)
        try:
            return func(*args, **kwargs)
        except SettingError as exc:  # an option no run can use: a usage error, exit code 2
            if exc.hint is None:
                raise click.UsageError(exc.problem) from None
            raise click.BadParameter(exc.problem, param_hint=exc.hint) from None
        except LulcError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; no output was written") from None
        except MemoryError:
            raise click.ClickException("out of memory; use smaller tiles or blocks (--tile, --block-px)") from None

    return wrapper
