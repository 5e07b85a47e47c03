"""Where the emulated device keeps its files: one folder under the user's cache folder.

``$XDG_CACHE_HOME/hmff-edge/device`` (default ``~/.cache/hmff-edge/device``), the
location platformdirs gives on Linux, the only system qemu-user and debootstrap run on::

    bookworm-arm64/root/        the Debian arm64 root (debootstrap), venv in /opt/hmff-edge
    bookworm-arm64/manifest.json  suite, Python and the pinned runtime versions inside
    wheels/<key>/               aarch64 wheels downloaded for those pins
    ssh/id_ed25519, known_hosts   the client key and the host key of the running sshd
    running.json                what is running: pid, port, mounts (read by status/stop/bench)

The two JSON files are dataclasses with :class:`JsonRecord`'s ``load`` and ``save``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import TypeVar

from hmff_edge.metadata import atomic_write_bytes

SUITE = "bookworm"  # Debian 12: Python 3.11 (cp311 wheels), glibc 2.36
SUITE_PYTHON = "3.11"
SUITE_GLIBC_MINOR = 36
VENV = "/opt/hmff-edge/venv"  # inside the root
MARKER = "/etc/hmff-edge/emulation.json"  # inside the root: says "this is an emulation"
SSHD_CONFIG = "/etc/ssh/sshd_config.hmff-edge"

R = TypeVar("R", bound="JsonRecord")


def cache_root(env: dict[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/hmff-edge/device``, or ``~/.cache/hmff-edge/device``."""
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hmff-edge" / "device"


class Layout:
    """Every path the emulator writes, derived from one cache folder."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.build = self.base / f"{SUITE}-arm64"
        self.root = self.build / "root"
        self.manifest = self.build / "manifest.json"
        # Where debootstrap works; renamed to ``build`` only when it succeeded.
        self.partial = self.base / f"{SUITE}-arm64.partial"
        self.ssh_dir = self.base / "ssh"
        self.client_key = self.ssh_dir / "id_ed25519"
        self.known_hosts = self.ssh_dir / "known_hosts"
        self.state = self.base / "running.json"
        self.sshd_log = self.base / "sshd.log"

    def __repr__(self) -> str:
        return f"Layout({str(self.base)!r})"

    @classmethod
    def default(cls) -> Layout:
        return cls(cache_root())

    def wheels(self, key: str) -> Path:
        return self.base / "wheels" / key

    def in_root(self, path: str) -> Path:
        """A path inside the root (``/etc/x`` -> ``<root>/etc/x``)."""
        return self.root / path.lstrip("/")


class JsonRecord:
    """Base of the dataclasses the emulator keeps as JSON files (``running.json``,
    ``manifest.json``)."""

    @classmethod
    def load(cls: type[R], path: Path) -> R | None:
        """The record in ``path``, or None when there is none or it is not one of this
        shape: a file another version wrote is rebuilt, not trusted. Keys this version does
        not know are ignored."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
        except TypeError:  # a required field is missing
            return None

    def save(self, path: Path) -> None:
        """Write the record through a temporary file, so a reader never sees half of it."""
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=1) + "\n").encode())

    def to_dict(self) -> dict:
        return asdict(self)
