"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from pathlib import Path


class SptBenchError(Exception):
    """An error caused by the user's input or environment (not a bug): shown as one line."""

    exit_code = 2


class InputError(SptBenchError):
    """Malformed input file: names the file, the 1-based line (when known) and the problem."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class ConfigError(SptBenchError):
    """Invalid configuration value or combination."""


class MissingAssetError(SptBenchError):
    """A model/encoder/data asset is not installed; the message says how to install it."""


def warn(message: str) -> None:
    """A user-facing warning: one line on stderr (`warning: ...`), the run goes on."""
    import sys

    print(f"warning: {message}", file=sys.stderr)
