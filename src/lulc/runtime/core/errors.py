"""One small error hierarchy; the CLI turns these into one-line messages (exit code 1)."""
from __future__ import annotations

from collections.abc import Callable


class LulcError(Exception):
    """A problem the user can fix: bad input, a wrong bundle, an unwritable output."""


class BundleError(LulcError):
    """The model bundle is missing, malformed, or lacks an artefact."""


class InputRasterError(LulcError, OSError):
    """An input raster is unreadable or does not match the bundle."""


class OutputError(LulcError, OSError):
    """The output cannot be written (exists without --overwrite, bad folder, ...)."""


class NoSpaceError(OutputError):
    """The file system of an output ran out of room; nothing of the run is kept.

    The message is made when it is shown (``describe(free)``), after the run has removed its
    work files, so the free space it names is what the user has to work with."""

    def __init__(self, describe: Callable[[], str], final: object = None, need: int | None = None):
        super().__init__()
        self.describe, self.final, self.need = describe, final, need

    def __str__(self) -> str:
        return self.describe()

    def __reduce__(self) -> tuple:
        """Sent between processes (a Dask worker's error) as the line it reads now."""
        return OutputError, (str(self),)


class BackendUnavailable(LulcError):
    """A requested inference backend or export target is not installed here."""


class ParityError(LulcError):
    """An exported artefact disagrees with the Keras model beyond tolerance."""


class Interrupted(LulcError):
    """Ctrl-C or SIGTERM stopped a run; the message says what, if anything, can be resumed."""


class SettingError(LulcError):
    """A setting no run can use, or settings that do not go together.

    ``hint`` names the setting (``--tile``, or a config file's key) so the CLI can report it
    as a bad option (``click.BadParameter``, exit code 2) the way click reports a wrong type;
    ``hint=None`` means a wrong combination of settings (``click.UsageError``). Library callers
    catch it as any :class:`LulcError`.
    """

    def __init__(self, hint: str | None, problem: str):
        super().__init__(f"{hint} {problem}" if hint else problem)
        self.hint, self.problem = hint, problem
