"""Build or reuse the Debian arm64 root: debootstrap once, then a venv with the pinned wheels.

The base (debootstrap, about 4 minutes and 300 MB) is built in ``<suite>-arm64.partial``
and renamed only when it succeeded; the venv is rebuilt on ``rebuild`` when the host's
runtime versions moved. Nothing is deleted below a folder that still has mounts in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hmff_edge.device import checks, wheels
from hmff_edge.device.errors import EmulatorError, StaleRootError
from hmff_edge.device.layout import SUITE, SUITE_PYTHON, VENV, JsonRecord, Layout
from hmff_edge.device.mounts import mounted_under

MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "openssh-server")
MANIFEST_FORMAT = 1
CHROOT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


@dataclass
class RootManifest(JsonRecord):
    """What the cached root holds (``manifest.json``)."""

    suite: str = SUITE
    arch: str = "arm64"
    python: str = SUITE_PYTHON
    pins: dict[str, str] = field(default_factory=dict)
    built: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT


def debootstrap_command(root: Path, suite: str = SUITE, mirror: str = MIRROR) -> list[str]:
    """The debootstrap call that makes the base root (minbase + Python + sshd)."""
    return [checks.tool("debootstrap"), "--arch=arm64", "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}", suite, str(root), mirror]


def chroot_command(root: Path, argv: list[str], qemu_cpu: str) -> list[str]:
    """Run ``argv`` inside ``root`` with a clean environment (the host's PIP_* and
    PYTHON* variables would otherwise leak into the arm64 Python)."""
    return [checks.tool("chroot"), str(root), "/usr/bin/env", "-i", f"PATH={CHROOT_PATH}",
            "HOME=/root", "LANG=C.UTF-8", f"QEMU_CPU={qemu_cpu}", *argv]


def chroot_env(qemu_cpu: str) -> dict[str, str]:
    """The environment of the host-side ``chroot`` process: qemu reads QEMU_CPU from it."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "QEMU_CPU": qemu_cpu, "LANG": "C.UTF-8"}


def base_ready(layout: Layout) -> bool:
    return all((layout.root / p).exists() for p in ("usr/bin/python3", "usr/sbin/sshd",
                                                     "usr/lib/python3.11/venv"))


def venv_ready(layout: Layout) -> bool:
    return layout.in_root(f"{VENV}/bin/python").exists()


def safe_rmtree(path: Path) -> None:
    """Remove ``path`` only when nothing is mounted below it (a bound /dev would go too)."""
    if mounted_under(path):
        raise EmulatorError(f"refusing to delete {path}: it still has mounts "
                            f"({', '.join(mounted_under(path))}); run 'hmff-edge device stop'")
    shutil.rmtree(path, ignore_errors=False)


def _stream(cmd: list[str], what: str, log, env: dict[str, str] | None = None,
            timeout: float = 3600) -> None:
    """Run ``cmd``, passing its output lines to ``log``; raise with the tail on failure."""
    tail: list[str] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-15:]
        log(f"{what}: {line}")
        if time.monotonic() > deadline:
            proc.kill()
    if proc.wait() != 0:
        raise EmulatorError(f"{what} failed (exit {proc.returncode}): " + " | ".join(tail))


def build_base(layout: Layout, log) -> float:
    """debootstrap the base root; returns the seconds it took."""
    checks.require_space(layout.base)
    if layout.partial.exists():
        safe_rmtree(layout.partial)
    layout.partial.mkdir(parents=True)
    t0 = time.monotonic()
    log(f"building the Debian {SUITE} arm64 root in {layout.build} (a few minutes, "
        f"about 550 MB with the runtime)")
    _stream(debootstrap_command(layout.partial / "root"), "debootstrap", log)
    if layout.build.exists():
        safe_rmtree(layout.build)
    os.replace(layout.partial, layout.build)
    return time.monotonic() - t0


def download_wheels(layout: Layout, pins: dict[str, str], log) -> Path:
    """The pinned aarch64 wheels, downloaded once per set of pins."""
    dest = layout.wheels(wheels.pins_key(pins))
    if (dest / "complete").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    log(f"downloading aarch64 wheels: {', '.join(f'{k}=={v}' for k, v in pins.items())}")
    proc = subprocess.run(wheels.download_command(pins, str(dest)), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise EmulatorError(f"pip could not download aarch64 wheels for {pins} (exit "
                            f"{proc.returncode}): {proc.stderr.strip()[-800:]}")
    (dest / "complete").write_text("")
    return dest


def install_venv(layout: Layout, pins: dict[str, str], qemu_cpu: str, log) -> float:
    """(Re)create the venv inside the root and install the pinned wheels, offline."""
    t0 = time.monotonic()
    wheel_src = download_wheels(layout, pins, log)
    venv_dir = layout.in_root(VENV)
    if venv_dir.exists():
        shutil.rmtree(venv_dir)
    staged = layout.in_root("/tmp/hmff-edge-wheels")
    if staged.exists():
        shutil.rmtree(staged)
    shutil.copytree(wheel_src, staged)
    env = chroot_env(qemu_cpu)
    try:
        log("creating the venv inside the root (emulated, about a minute)")
        _stream(chroot_command(layout.root, ["/usr/bin/python3", "-m", "venv", VENV], qemu_cpu),
                "venv", log, env)
        _stream(chroot_command(layout.root, wheels.install_command(
            pins, "/tmp/hmff-edge-wheels", VENV), qemu_cpu), "pip", log, env)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return time.monotonic() - t0


def ensure_root(layout: Layout, pins: dict[str, str], qemu_cpu: str, *, rebuild: bool = False,
                log=None) -> RootManifest:
    """Build what is missing; refuse a root built for other runtime versions unless
    ``rebuild`` (then only the venv is rebuilt)."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    manifest = RootManifest.load(layout.manifest)
    seconds: dict[str, float] = {}
    if not base_ready(layout):
        seconds["debootstrap"] = round(build_base(layout, log), 1)
        manifest = None
    if manifest and venv_ready(layout) and manifest.pins == pins:
        return manifest
    if manifest and venv_ready(layout) and manifest.pins and not rebuild:
        diffs = wheels.pin_differences(manifest.pins, pins)
        raise StaleRootError(f"the cached arm64 root {layout.root} was built for other runtime "
                             f"versions ({'; '.join(diffs)}); rerun with --rebuild to reinstall "
                             f"its venv with the host's versions (the Debian base is kept)")
    seconds["venv"] = round(install_venv(layout, pins, qemu_cpu, log), 1)
    if manifest is not None:
        seconds = {**manifest.seconds, **seconds}
    manifest = RootManifest(pins=pins, built=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            python=_root_python(layout), seconds=seconds)
    manifest.save(layout.manifest)
    return manifest


def _root_python(layout: Layout) -> str:
    lib = sorted(p.name for p in (layout.root / "usr" / "lib").glob("python3.*"))
    return lib[-1].removeprefix("python") if lib else SUITE_PYTHON
