"""The mounts that make the root usable, and undoing every one of them.

Inside the root: ``/proc`` (a fresh procfs), a Pi-like ``/proc/cpuinfo`` bound over it, and
``/dev`` bound from the host. The host's ``/sys`` is *not* bound (cpuinfo crashes on it under
qemu-user); the two files XNNPACK needs live in the root's own ``sys/`` folder instead.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hmff_edge.device.errors import EmulatorError

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Mount:
    """One mount: ``source`` on ``target``, a bind mount or a file system of ``fstype``."""

    source: str
    target: str
    fstype: str | None = None

    def command(self) -> list[str]:
        if self.fstype:
            return ["mount", "-t", self.fstype, self.source, self.target]
        return ["mount", "--bind", self.source, self.target]


def plan(root: Path, cpuinfo: Path) -> list[Mount]:
    """The mounts of a running root, in mounting order (``cpuinfo`` is a file in the cache)."""
    return [Mount("proc", str(root / "proc"), "proc"),
            Mount(str(cpuinfo), str(root / "proc" / "cpuinfo")),
            Mount("/dev", str(root / "dev"))]


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounted_under(root: Path, mountinfo: str | None = None) -> list[str]:
    """Mount points at or below ``root``, deepest (last mounted) first: the unmount order."""
    if mountinfo is None:
        mountinfo = Path(MOUNTINFO).read_text()
    prefix = str(root).rstrip("/")
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return points[::-1]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EmulatorError(f"{' '.join(cmd)} failed (exit {proc.returncode}): "
                            f"{proc.stderr.strip()[-500:]}")


def mount_all(mounts: list[Mount], run=_run) -> list[str]:
    """Mount each in order; on a failure unmount what was mounted and raise."""
    done: list[str] = []
    try:
        for m in mounts:
            run(m.command())
            done.append(m.target)
    except BaseException:
        unmount(done[::-1], run=run)
        raise
    return done


def unmount(points: list[str], run=_run) -> list[str]:
    """Unmount ``points`` in the given order (lazy when busy); the ones that failed."""
    failed = []
    for point in points:
        try:
            run(["umount", point])
        except EmulatorError:
            try:
                run(["umount", "--lazy", point])
            except EmulatorError:
                failed.append(point)
    return failed


def unmount_root(root: Path, run=_run, mountinfo: str | None = None) -> list[str]:
    """Unmount everything below ``root``; raise when something stays mounted."""
    failed = unmount(mounted_under(root, mountinfo), run=run)
    if failed:
        raise EmulatorError(f"could not unmount {', '.join(failed)}; stop the processes that "
                            f"use them (fuser -vm {failed[0]}) and run 'hmff-edge device stop' "
                            f"again")
    return failed
