"""The runtime inside the root: aarch64 wheels pinned to the versions this host runs.

pip does not fall back across manylinux tags for a foreign platform, so the download names
every ``manylinux_2_NN_aarch64`` tag the root's glibc accepts (the LiteRT 2.x wheels are
``manylinux_2_27``), plus ``manylinux2014_aarch64`` and ``any``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from importlib import metadata

from hmff_edge.device.errors import EmulatorError
from hmff_edge.device.layout import SUITE_GLIBC_MINOR, SUITE_PYTHON

RUNTIME_PACKAGES = ("ai-edge-litert", "numpy")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def host_pins(packages: tuple[str, ...] = RUNTIME_PACKAGES,
              version=metadata.version, requires=metadata.requires) -> dict[str, str]:
    """``{package: host version}`` for ``packages`` and their direct dependencies.

    A dependency the host does not have is left to pip (it is not pinned); a requested
    package the host does not have is an :class:`EmulatorError`.
    """
    pins: dict[str, str] = {}
    for pkg in packages:
        try:
            pins[_norm(pkg)] = version(pkg)
        except metadata.PackageNotFoundError:
            raise EmulatorError(f"{pkg} is not installed on this host, so there is no version "
                                f"to pin in the arm64 root; pip install {pkg}") from None
        for req in requires(pkg) or []:
            m = _NAME.match(req)
            marker = req.split(";", 1)[1] if ";" in req else ""
            if not m or "extra" in marker:  # optional extras are not part of the runtime
                continue
            dep = _norm(m.group(1))
            if dep in pins:
                continue
            try:
                pins[dep] = version(dep)
            except metadata.PackageNotFoundError:
                continue
    return dict(sorted(pins.items()))


def platform_tags(glibc_minor: int = SUITE_GLIBC_MINOR) -> list[str]:
    """Every aarch64 wheel platform tag the root's glibc can load, newest first."""
    tags = [f"manylinux_2_{n}_aarch64" for n in range(glibc_minor, 16, -1)]
    return tags + ["manylinux2014_aarch64", "any"]


def download_command(pins: dict[str, str], dest: str, python: str = SUITE_PYTHON,
                     glibc_minor: int = SUITE_GLIBC_MINOR, pip: list[str] | None = None
                     ) -> list[str]:
    """``pip download`` of the pinned aarch64 wheels for the root's Python into ``dest``."""
    abi = "cp" + python.replace(".", "")
    cmd = list(pip or [sys.executable, "-m", "pip"]) + [
        "download", "--quiet", "--only-binary=:all:", "--implementation", "cp",
        "--python-version", python, "--abi", abi, "--abi", "abi3", "--abi", "none",
        "--dest", dest]
    for tag in platform_tags(glibc_minor):
        cmd += ["--platform", tag]
    return cmd + [f"{name}=={ver}" for name, ver in pins.items()]


def install_command(pins: dict[str, str], wheel_dir: str, venv: str) -> list[str]:
    """``pip install`` inside the root from the downloaded wheels only (no network)."""
    return [f"{venv}/bin/python", "-m", "pip", "install", "--quiet", "--no-index",
            "--disable-pip-version-check", "--find-links", wheel_dir] + [
        f"{name}=={ver}" for name, ver in pins.items()]


def pins_key(pins: dict[str, str], python: str = SUITE_PYTHON) -> str:
    """A short stable name for a set of pins (the wheel cache folder)."""
    blob = json.dumps({"python": python, "pins": pins}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def pin_differences(built: dict[str, str], wanted: dict[str, str]) -> list[str]:
    """Human-readable differences between the root's pins and the host's."""
    out = []
    for name in sorted(set(built) | set(wanted)):
        a, b = built.get(name), wanted.get(name)
        if a != b:
            out.append(f"{name} {a or 'absent'} in the root, {b or 'absent'} on the host")
    return out
