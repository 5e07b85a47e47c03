"""Errors of the emulated device; each message says what is wrong and how to fix it."""

from hmff_edge.errors import ExitCode, UnavailableError


class EmulatorError(UnavailableError):
    """The emulated device cannot be built, started or reached (exit 5)."""


class NeedsRootError(EmulatorError):
    """debootstrap, chroot and mount need root."""


class MissingToolError(EmulatorError):
    """A host program (qemu-user-static, debootstrap, ...) is not installed (exit 4)."""

    exit_code = ExitCode.MISSING_DEPENDENCY


class NoSpaceError(EmulatorError):
    """Not enough free space in the cache folder for the arm64 root."""


class PortInUseError(EmulatorError):
    """The requested 127.0.0.1 port is taken."""


class StaleRootError(EmulatorError):
    """The cached root holds runtime versions other than the host's."""


class XnnpackError(EmulatorError):
    """LiteRT fell back to its reference kernels inside the root (int8 answers change)."""
