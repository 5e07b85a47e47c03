"""Exception types shared by the library and the CLI.

Every error a user can cause (bad name, bad size, bad file) is an :class:`HmffEdgeError`;
the CLI turns it into a one-line message and exit code 2 instead of a traceback.
"""


class HmffEdgeError(Exception):
    """Base class for errors caused by the input a user gave."""

    exit_code = 2


class ConfigError(HmffEdgeError, ValueError):
    """An option or combination of options that cannot work (unknown model, too-small input...)."""


class DataError(HmffEdgeError):
    """A data source that cannot be used (missing, empty, one class only, unreadable)."""


class ArtifactError(HmffEdgeError):
    """A model file or run folder that is missing, corrupt or lacks metadata."""


class VerificationError(HmffEdgeError):
    """An export whose outputs disagree with the Keras model beyond the tolerance."""

    exit_code = 3


class MissingDependencyError(HmffEdgeError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
