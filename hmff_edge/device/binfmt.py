"""binfmt_misc: the kernel hook that runs arm64 programs through qemu-aarch64-static.

With the ``F`` (fix binary) flag, which Debian's qemu-user-static sets, the kernel opens the
interpreter when it is registered, so it works inside a chroot without a copy of qemu there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hmff_edge.device import checks
from hmff_edge.device.errors import EmulatorError

BINFMT = Path("/proc/sys/fs/binfmt_misc")
ENTRY = "qemu-aarch64"


@dataclass
class Entry:
    """The parsed ``/proc/sys/fs/binfmt_misc/qemu-aarch64``."""

    enabled: bool
    interpreter: str | None
    flags: str

    @classmethod
    def parse(cls, text: str) -> Entry:
        interp = re.search(r"^interpreter (\S+)", text, re.MULTILINE)
        flags = re.search(r"^flags: ?(\S*)", text, re.MULTILINE)
        return cls(enabled=text.startswith("enabled"),
                   interpreter=interp.group(1) if interp else None,
                   flags=flags.group(1) if flags else "")


def _run(cmd: list[str], hint: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EmulatorError(f"{' '.join(cmd)} failed (exit {proc.returncode}): "
                            f"{proc.stderr.strip()[-300:]}; {hint}")


def ensure(root: Path, base: Path = BINFMT) -> bool:
    """Make arm64 binaries runnable; True when this call mounted binfmt_misc (undo it later)."""
    mounted = False
    if not (base / "status").exists():
        _run([checks.tool("mount"), "-t", "binfmt_misc", "binfmt_misc", str(base)],
             "binfmt_misc must be available (a container may need --privileged)")
        mounted = True
    entry_path = base / ENTRY
    if not entry_path.exists() or not Entry.parse(entry_path.read_text()).enabled:
        _run([checks.tool("update-binfmts"), "--enable", ENTRY],
             "reinstall the handlers with: apt-get install --reinstall qemu-user-static "
             "binfmt-support")
    if not entry_path.exists():
        raise EmulatorError(f"no {ENTRY} handler in {base} after update-binfmts; reinstall with "
                            f"apt-get install --reinstall qemu-user-static binfmt-support")
    entry = Entry.parse(entry_path.read_text())
    if "F" not in entry.flags and entry.interpreter:
        # Without F the kernel looks the interpreter up inside the chroot: put it there.
        dest = root / entry.interpreter.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(entry.interpreter).resolve(), dest)
    return mounted


def release(mounted: bool, base: Path = BINFMT) -> None:
    """Unmount binfmt_misc if :func:`ensure` mounted it."""
    if mounted:
        subprocess.run([checks.tool("umount"), str(base)], capture_output=True)
