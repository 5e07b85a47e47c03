"""Device profiles: JSON files shipped inside the package (``hmff_edge/bench/device_profiles/``).

A profile gives a device's defaults: thread count, memory cap, largest batch, runtime.
``--device rpi`` without ``--host`` runs the Pi profile *locally* as an emulation (same thread
count and memory cap, this machine's cores) and every output says so. ``--profile`` also
accepts a path to a JSON file of the same shape, and ``HMFF_BENCH_PROFILES`` names an extra
folder searched before the shipped profiles.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hmff_edge.bench.runner import parse_size
from hmff_edge.errors import ConfigError

DEVICES = ("cpu", "gpu", "rpi")
DEFAULT_PROFILE = {"cpu": "cpu", "gpu": "gpu", "rpi": "rpi4"}
_KNOWN_KEYS = {"name", "kind", "description", "threads", "memory_limit", "max_batch", "runtime",
               "remote_python"}


@dataclass
class DeviceProfile:
    """One device's defaults, as read from ``device_profiles/<name>.json``."""

    name: str
    kind: str  # cpu | gpu | rpi
    description: str = ""
    threads: int = 1
    memory_limit: int | None = None  # bytes
    max_batch: int = 64
    runtime: str = "litert"
    remote_python: str = "python3"
    extra: dict[str, Any] = field(default_factory=dict)
    path: str = ""


def _folders() -> list[Any]:
    """Where profiles are looked up: ``$HMFF_BENCH_PROFILES`` first, then the package's own."""
    shipped = resources.files("hmff_edge.bench") / "device_profiles"
    extra = os.environ.get("HMFF_BENCH_PROFILES")
    return ([Path(extra)] if extra else []) + [shipped]


def list_profiles() -> list[str]:
    """Names of every profile that ``--profile NAME`` can find."""
    names = set()
    for folder in _folders():
        if folder.is_dir():
            names.update(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))
    return sorted(names)


def _find(name_or_path: str) -> tuple[str, str]:
    """(JSON text, where it came from) for a profile name or a path to a JSON file."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return path.read_text(), str(path)
    for folder in _folders():
        cand = folder / f"{name_or_path}.json"
        if cand.is_file():
            return cand.read_text(), str(cand)
    raise ConfigError(f"no device profile {name_or_path!r}; known profiles: "
                      f"{', '.join(list_profiles()) or '(none found)'} (or give a path to a "
                      f"JSON file)")


def load_profile(name_or_path: str) -> DeviceProfile:
    """A profile by name (``rpi4``) or by path to a JSON file."""
    text, where = _find(name_or_path)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"device profile {where} is not valid JSON: {exc}") from exc
    if data.get("kind") not in DEVICES:
        raise ConfigError(f"device profile {where}: 'kind' must be one of {DEVICES}, got "
                          f"{data.get('kind')!r}")
    try:
        limit = parse_size(data.get("memory_limit"))
    except ValueError as exc:
        raise ConfigError(f"device profile {where}: {exc}") from exc
    return DeviceProfile(
        name=data.get("name", Path(where).stem), kind=data["kind"],
        description=data.get("description", ""), threads=int(data.get("threads", 1)),
        memory_limit=limit, max_batch=int(data.get("max_batch", 64)),
        runtime=data.get("runtime", "litert"),
        remote_python=data.get("remote_python", "python3"),
        extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS}, path=where)


def profile_for(device: str, profile: str | None = None) -> DeviceProfile:
    """The profile for ``--device`` (and an optional ``--profile``), kinds checked."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    prof = load_profile(profile or DEFAULT_PROFILE[device])
    if prof.kind != device:
        raise ConfigError(f"profile {prof.name!r} is for device {prof.kind!r}, not {device!r}")
    return prof
