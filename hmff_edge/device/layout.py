"""Where the emulated device keeps its files: one folder under the user's cache folder.

``$XDG_CACHE_HOME/hmff-edge/device`` (default ``~/.cache/hmff-edge/device``), the
location platformdirs gives on Linux, the only system qemu-user and debootstrap run on::

    bookworm-arm64/root/        the Debian arm64 root (debootstrap), venv in /opt/hmff-edge
    bookworm-arm64/manifest.json  suite, Python and the pinned runtime versions inside
    wheels/<key>/               aarch64 wheels downloaded for those pins
    ssh/id_ed25519, known_hosts   the client key and the host key of the running sshd
    running.json                what is running: pid, port, mounts (read by status/stop/bench)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"  # Debian 12: Python 3.11 (cp311 wheels), glibc 2.36
SUITE_PYTHON = "3.11"
SUITE_GLIBC_MINOR = 36
VENV = "/opt/hmff-edge/venv"  # inside the root
MARKER = "/etc/hmff-edge/emulation.json"  # inside the root: says "this is an emulation"
SSHD_CONFIG = "/etc/ssh/sshd_config.hmff-edge"


def cache_root(env: dict[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/hmff-edge/device``, or ``~/.cache/hmff-edge/device``."""
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hmff-edge" / "device"


@dataclass(frozen=True)
class Layout:
    """Every path the emulator writes, derived from one cache folder."""

    base: Path

    @classmethod
    def default(cls) -> Layout:
        return cls(cache_root())

    @property
    def build(self) -> Path:
        return self.base / f"{SUITE}-arm64"

    @property
    def root(self) -> Path:
        return self.build / "root"

    @property
    def partial(self) -> Path:
        """Where debootstrap works; renamed to :attr:`build` only when it succeeded."""
        return self.base / f"{SUITE}-arm64.partial"

    @property
    def manifest(self) -> Path:
        return self.build / "manifest.json"

    def wheels(self, key: str) -> Path:
        return self.base / "wheels" / key

    @property
    def ssh_dir(self) -> Path:
        return self.base / "ssh"

    @property
    def client_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def state(self) -> Path:
        return self.base / "running.json"

    @property
    def sshd_log(self) -> Path:
        return self.base / "sshd.log"

    def in_root(self, path: str) -> Path:
        """A path inside the root (``/etc/x`` -> ``<root>/etc/x``)."""
        return self.root / path.lstrip("/")
