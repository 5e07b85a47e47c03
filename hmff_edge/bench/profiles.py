"""Device profiles: data files in the top-level ``bench/profiles/`` folder (TF-free).

A profile gives a device's defaults: thread count, memory cap, largest batch, runtime.
``--device rpi`` without ``--host`` runs the Pi profile *locally* as an emulation (same thread
count and memory cap, this machine's cores) and every output says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hmff_edge.bench.runner import parse_size
from hmff_edge.errors import ConfigError

PROFILE_DIR = Path(os.environ.get("HMFF_BENCH_PROFILES",
                                  Path(__file__).resolve().parents[2] / "bench" / "profiles"))
DEVICES = ("cpu", "gpu", "rpi")
DEFAULT_PROFILE = {"cpu": "cpu", "gpu": "gpu", "rpi": "rpi4"}


@dataclass
class DeviceProfile:
    """One device's defaults, as read from ``bench/profiles/<name>.json``."""

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


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json")) if PROFILE_DIR.is_dir() else []


def load_profile(name_or_path: str) -> DeviceProfile:
    """A profile by name (``rpi4``) or by path to a JSON file."""
    path = Path(name_or_path)
    if not (path.suffix == ".json" and path.is_file()):
        path = PROFILE_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ConfigError(f"no device profile {name_or_path!r}: looked for {path}; known "
                          f"profiles: {', '.join(list_profiles()) or '(none found)'}")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"device profile {path} is not valid JSON: {exc}") from exc
    known = {"name", "kind", "description", "threads", "memory_limit", "max_batch", "runtime",
             "remote_python"}
    if data.get("kind") not in DEVICES:
        raise ConfigError(f"device profile {path}: 'kind' must be one of {DEVICES}, got "
                          f"{data.get('kind')!r}")
    try:
        limit = parse_size(data.get("memory_limit"))
    except ValueError as exc:
        raise ConfigError(f"device profile {path}: {exc}") from exc
    return DeviceProfile(
        name=data.get("name", path.stem), kind=data["kind"],
        description=data.get("description", ""), threads=int(data.get("threads", 1)),
        memory_limit=limit, max_batch=int(data.get("max_batch", 64)),
        runtime=data.get("runtime", "litert"),
        remote_python=data.get("remote_python", "python3"),
        extra={k: v for k, v in data.items() if k not in known}, path=str(path))


def profile_for(device: str, profile: str | None = None) -> DeviceProfile:
    """The profile for ``--device`` (and an optional ``--profile``), kinds checked."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    prof = load_profile(profile or DEFAULT_PROFILE[device])
    if prof.kind != device:
        raise ConfigError(f"profile {prof.name!r} is for device {prof.kind!r}, not {device!r}")
    return prof
