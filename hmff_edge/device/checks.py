"""Checks made before any expensive or privileged work: root, host tools, space, port."""

from __future__ import annotations

import errno
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from hmff_edge.device.errors import MissingToolError, NeedsRootError, NoSpaceError, PortInUseError

# Host program -> the Debian package that provides it.
TOOLS: dict[str, str] = {
    "debootstrap": "debootstrap",
    "qemu-aarch64-static": "qemu-user-static",
    "update-binfmts": "binfmt-support",
    "ssh": "openssh-client",
    "scp": "openssh-client",
    "ssh-keygen": "openssh-client",
    "chroot": "coreutils",
    "mount": "mount",
    "umount": "mount",
}
SBIN_DIRS = ("/usr/sbin", "/sbin")
# An arm64 root with Python, the wheels and sshd, plus room for pip's unpacking.
ROOT_BYTES = 1536 * 2**20


def require_root(action: str, euid: int | None = None) -> None:
    """Raise :class:`NeedsRootError` unless this process runs as root."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        raise NeedsRootError(f"{action} needs root (debootstrap, chroot and mount do); run it "
                             f"as root, e.g. 'sudo -E hmff-edge device ...' (uid is {euid})")


def require_tools(names: list[str] | None = None,
                  which: Callable[[str], str | None] | None = None) -> None:
    """Raise :class:`MissingToolError` naming the Debian packages of the missing programs."""
    names = list(TOOLS) if names is None else names
    missing = [n for n in names if not _find(n, which or shutil.which)]
    if missing:
        pkgs = sorted({TOOLS.get(n, n) for n in missing})
        raise MissingToolError(f"missing host program(s) {', '.join(missing)}; install them "
                               f"with: apt-get update && apt-get install -y {' '.join(pkgs)}")


def _find(name: str, which: Callable[[str], str | None]) -> str | None:
    # Root's PATH usually has the sbin folders; sudo or a plain user shell may not.
    return which(name) or next((p for d in SBIN_DIRS
                                if os.access(p := f"{d}/{name}", os.X_OK)), None)


def tool(name: str) -> str:
    """Absolute path of a host program (after :func:`require_tools`)."""
    found = _find(name, shutil.which)
    if not found:
        require_tools([name])
    return found  # type: ignore[return-value]


def require_space(path: Path, need: int = ROOT_BYTES) -> None:
    """Raise :class:`NoSpaceError` when the file system holding ``path`` has under ``need``."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise NoSpaceError(f"the arm64 root needs about {need / 2**30:.1f} GiB in {path} but "
                           f"only {free / 2**30:.2f} GiB is free there; free some space or set "
                           f"XDG_CACHE_HOME to a folder on a larger disk")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def require_free_port(port: int, host: str = "127.0.0.1") -> int:
    """``port`` if it can be bound on ``host``, else :class:`PortInUseError`."""
    if not 1 <= port <= 65535:
        raise PortInUseError(f"--port must be between 1 and 65535, got {port}")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc})"
            raise PortInUseError(f"port {port} on {host} {why}; pass another --port, or leave "
                                 f"--port out to pick a free one") from None
    return port
