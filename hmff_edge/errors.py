"""Exception types shared by the library and the CLI, and the CLI's exit codes.

Every error a user can cause (bad name, bad size, bad file) is an :class:`HmffEdgeError`; the
CLI turns it into a one-line ``Error: ...`` on stderr and the exit code of its class, from
the one table :data:`EXIT_CODES` that ``hmff-edge --help`` and the docs show.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit status of every ``hmff-edge`` command."""

    OK = 0
    UNEXPECTED = 1  # a bug: the traceback is printed
    BAD_INPUT = 2  # an option, data set, model file or run folder that cannot be used
    VERIFICATION_FAILED = 3  # an export disagrees with the Keras model beyond the tolerance
    MISSING_DEPENDENCY = 4  # an optional package is not installed (the message names the extra)
    UNAVAILABLE = 5  # a resource is not there: port in use, no GPU, device unreachable
    INTERRUPTED = 130  # Ctrl-C


EXIT_CODES: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.UNEXPECTED: "unexpected error (a bug; traceback printed)",
    ExitCode.BAD_INPUT: "bad input: option, data, model file or run folder (also usage errors)",
    ExitCode.VERIFICATION_FAILED: "an export failed verification against the Keras model",
    ExitCode.MISSING_DEPENDENCY: "an optional dependency is missing (message names the extra)",
    ExitCode.UNAVAILABLE: "a resource is unavailable: port in use, no GPU, device unreachable",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


def exit_code_table() -> str:
    """The exit codes as aligned ``code  meaning`` lines (for ``--help`` and the docs)."""
    return "\n".join(f"{int(code):>3}  {text}" for code, text in EXIT_CODES.items())


class HmffEdgeError(Exception):
    """Base class for errors caused by the input a user gave."""

    exit_code: int = ExitCode.BAD_INPUT


class ConfigError(HmffEdgeError, ValueError):
    """An option or combination of options that cannot work (unknown model, too-small input...)."""


class DataError(HmffEdgeError):
    """A data source that cannot be used (missing, empty, one class only, unreadable)."""


class ArtifactError(HmffEdgeError):
    """A model file or run folder that is missing, corrupt or lacks metadata."""


class VerificationError(HmffEdgeError):
    """An export whose outputs disagree with the Keras model beyond the tolerance."""

    exit_code = ExitCode.VERIFICATION_FAILED


class MissingDependencyError(HmffEdgeError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    exit_code = ExitCode.MISSING_DEPENDENCY


class UnavailableError(HmffEdgeError):
    """Something the command needs is not available: a port in use, a GPU, a remote device."""

    exit_code = ExitCode.UNAVAILABLE
