"""The served model versions: loading, verifying, swapping in, draining, unloading.

A version is loaded off the event loop, verified (its metadata: sidecar or embedded, and
shapes consistent with the engine) and warmed up (one inference on zeros that must give one
finite probability row), and only then marked READY. Requests that name no version go to the
highest READY version, chosen when the request starts: the swap to a new version is one
state change on the event loop, so a request runs entirely on the version it started on. A
version that fails to load is UNAVAILABLE with its reason (on its ready endpoint, in the
index and the log) and is retried when its files change; it never displaces a working
version. A version removed from disk (or from the policy, once a newer one is READY) turns
UNLOADING: no new requests, the ones in flight finish, then its engine stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hmff_edge.errors import ArtifactError, HmffEdgeError
from hmff_edge.metadata import sidecar_path
from hmff_edge.runtime import Predictor, load
from hmff_edge.serve.batching import Batcher
from hmff_edge.serve.config import ServeConfig
from hmff_edge.serve.limits import HTTPError
from hmff_edge.serve.metrics import Metrics, VersionGauge
from hmff_edge.serve.repository import Scan, scan, scan_or_raise

log = logging.getLogger("hmff_edge.serve")

LOADING, READY, UNAVAILABLE, UNLOADING = "LOADING", "READY", "UNAVAILABLE", "UNLOADING"


def file_signature(path: Path) -> tuple:
    """What changes when a version's files are rewritten: size and mtime of both."""
    out = []
    for p in (path, sidecar_path(path)):
        try:
            st = p.stat()
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def load_verified(path: Path, threads: int | None) -> Predictor:
    """Load a model file and prove it runs: one warm-up inference on zeros must give one
    finite row of probabilities per label. Raises :class:`ArtifactError` otherwise."""
    p = load(path, threads=threads)
    x = np.zeros((1, *p.sample_shape), p.input_dtype)
    try:
        y = p.to_probabilities(p.run(x))
    except Exception as exc:  # an engine that cannot run this file
        raise ArtifactError(f"{str(path)!r}: warm-up inference failed: {exc}") from exc
    if y.shape != (1, len(p.labels)) or not np.isfinite(y).all():
        raise ArtifactError(f"{str(path)!r}: warm-up inference gave shape {list(y.shape)} "
                            f"(finite: {bool(np.isfinite(y).all())}), expected [1, {len(p.labels)}]")
    return p


def _lower_priority() -> None:
    """Loading and warming up a new version yields the CPU to the versions serving now."""
    # Not Linux, or not permitted: load at normal priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


@dataclass
class ModelVersion:
    """One version of one model and where it is in its life."""

    model: str
    version: int
    path: Path
    state: str = LOADING
    reason: str = ""
    signature: tuple = ()
    predictor: Predictor | None = None
    batcher: Batcher | None = None
    load_seconds: float = 0.0
    inflight: int = 0
    _drained: asyncio.Event | None = field(default=None, repr=False)


class ModelManager:
    """The repository's versions as served now; all methods run on the event loop except
    :meth:`load_initial` (before it starts)."""

    def __init__(self, root: str | Path, cfg: ServeConfig, metrics: Metrics) -> None:
        self.root = Path(root)
        self.cfg = cfg
        self.metrics = metrics
        self.models: dict[str, dict[int, ModelVersion]] = {}
        self.unloaded: set[str] = set()  # unloaded through the API: polling leaves them out
        self._warned: set[str] = set()
        self._lock: asyncio.Lock | None = None
        self._retiring: set[asyncio.Task] = set()
        self._loader: ThreadPoolExecutor | None = None  # made when the first reload comes

    # -- start-up ---------------------------------------------------------------------------
    def load_initial(self) -> None:
        """Load everything the repository and policy select. A single model file must load;
        otherwise versions that fail are UNAVAILABLE (and logged), and at least one must load."""
        found = scan_or_raise(self.root, self.cfg.policy)
        failures = []
        for name, versions in found.models.items():
            for v, path in versions.items():
                mv = ModelVersion(name, v, path, signature=file_signature(path))
                t0 = time.perf_counter()
                try:
                    mv.predictor = load_verified(path, self.cfg.threads)
                except HmffEdgeError as exc:
                    if self.root.is_file():
                        raise
                    mv.state, mv.reason = UNAVAILABLE, str(exc)
                    failures.append(f"{path.name}: {exc}")
                    log.warning("model %s version %d is unavailable: %s", name, v, exc)
                mv.load_seconds = time.perf_counter() - t0
                self.models.setdefault(name, {})[v] = mv
        if not any(mv.predictor for mv in self._all()):
            raise ArtifactError(f"no model in {str(self.root)!r} could be loaded: "
                                + "; ".join(failures))

    async def start(self) -> None:
        """Start the engine threads of the versions loaded so far (on the server's loop)."""
        self._lock = asyncio.Lock()
        for mv in self._all():
            if mv.predictor is not None and mv.state == LOADING:
                self._activate(mv)

    async def stop(self) -> None:
        """Finish every queued request and stop every engine thread."""
        for mv in list(self._all()):
            mv.state = UNLOADING
            if mv.batcher is not None:
                await mv.batcher.stop()
        for t in list(self._retiring):
            t.cancel()
        if self._loader is not None:
            self._loader.shutdown(wait=False, cancel_futures=True)

    def _activate(self, mv: ModelVersion) -> None:
        p = mv.predictor
        assert p is not None

        def run(x: np.ndarray) -> np.ndarray:
            return p.to_probabilities(p.run(x))

        cfg = self.cfg
        mv.batcher = Batcher(f"{mv.model}-{mv.version}", run, max_batch=cfg.max_batch,
                             max_delay_s=cfg.max_delay_ms / 1000, max_queue=cfg.max_queue,
                             on_batch=self.metrics.on_batch(mv.model, mv.version))
        mv.batcher.start()
        mv.state = READY

    # -- requests ---------------------------------------------------------------------------
    def _all(self):
        for versions in self.models.values():
            yield from versions.values()

    def versions(self, name: str) -> dict[int, ModelVersion]:
        """The versions known for ``name``; 404 when the model is unknown."""
        versions = self.models.get(name)
        if not versions:
            raise HTTPError(404, f"model {name!r} not found; served models: {sorted(self.models)}",
                            close=True)
        return versions

    def resolve(self, name: str, version: int | None) -> ModelVersion:
        """The version a request runs on: the one named, or the highest READY one."""
        versions = self.versions(name)
        if version is None:
            ready = [v for v, mv in versions.items() if mv.state == READY]
            if not ready:
                states = ", ".join(f"{v}: {mv.state} {mv.reason}".strip()
                                   for v, mv in sorted(versions.items()))
                raise HTTPError(503, f"model {name!r} has no ready version ({states})",
                                headers={"Retry-After": "1"})
            return versions[max(ready)]
        mv = versions.get(version)
        if mv is None:
            raise HTTPError(404, f"model {name!r} has no version {version}; versions: "
                                 f"{sorted(versions)}", close=True)
        if mv.state != READY:
            raise HTTPError(503, f"model {name!r} version {version} is {mv.state}"
                                 + (f": {mv.reason}" if mv.reason else ""),
                            headers={"Retry-After": "1"})
        return mv

    @contextlib.asynccontextmanager
    async def use(self, name: str, version: int | None) -> AsyncIterator[ModelVersion]:
        """Hold a version for one request; an UNLOADING version waits for its holders."""
        mv = self.resolve(name, version)
        mv.inflight += 1
        try:
            yield mv
        finally:
            mv.inflight -= 1
            if mv.inflight == 0 and mv._drained is not None:
                mv._drained.set()

    def is_ready(self) -> bool:
        """Every model (not unloaded through the API) has a READY version."""
        return bool(self.models) and all(
            any(mv.state == READY for mv in vs.values()) for vs in self.models.values())

    def gauges(self) -> list[VersionGauge]:
        return [VersionGauge(mv.model, mv.version, mv.state,
                             mv.batcher.depth if mv.batcher is not None else 0, mv.load_seconds)
                for mv in self._all()]

    def index(self) -> list[dict]:
        """Triton's repository index: every model version and its state."""
        out = [{"name": mv.model, "version": str(mv.version), "state": mv.state,
                "reason": mv.reason} for mv in self._all()]
        out += [{"name": n, "state": UNAVAILABLE, "reason": "unloaded"}
                for n in sorted(self.unloaded - set(self.models))]
        return sorted(out, key=lambda e: (e["name"], int(e.get("version", 0))))

    # -- the repository changing --------------------------------------------------------------
    async def sync(self, only: str | None = None) -> None:
        """Look at the repository once: load new (or changed, previously failed) versions,
        retire versions that left it. ``only`` restricts the pass to one model."""
        assert self._lock is not None, "start() first"
        async with self._lock:
            found: Scan = await asyncio.to_thread(scan, self.root, self.cfg.policy)
            for problem in found.problems:
                if problem not in self._warned:
                    self._warned.add(problem)
                    log.warning("model repository: %s", problem)
            names = [only] if only is not None else \
                [n for n in {*found.models, *self.models} if n not in self.unloaded]
            for name in names:
                await self._sync_model(name, found.models.get(name, {}),
                                       found.found.get(name, {}))

    async def _sync_model(self, name: str, wanted: dict[int, Path], on_disk: dict[int, Path]) -> None:
        current = self.models.get(name, {})
        loads = []
        for v, path in sorted(wanted.items()):
            mv = current.get(v)
            sig = file_signature(path)
            if mv is None or (mv.state == UNAVAILABLE and mv.signature != sig):
                loads.append(self._load(name, v, path, sig))
        await asyncio.gather(*loads)
        current = self.models.get(name, {})
        any_ready = any(current[v].state == READY for v in wanted if v in current)
        for v, mv in list(current.items()):
            if mv.state == UNLOADING:
                continue
            gone = v not in on_disk
            # Out of the policy but still on disk: kept until a wanted version is READY,
            # so a newer version that fails to load never leaves the model with none.
            if gone or (v not in wanted and any_ready):
                self._retire(mv, "removed from the repository" if gone else "outside the policy")

    async def _load(self, name: str, version: int, path: Path, sig: tuple) -> None:
        mv = ModelVersion(name, version, path, signature=sig)
        old = self.models.setdefault(name, {}).get(version)
        if old is None:  # a failed version keeps showing its reason until the retry succeeds
            self.models[name][version] = mv
        t0 = time.perf_counter()
        try:
            if self._loader is None:
                self._loader = ThreadPoolExecutor(1, thread_name_prefix="loader",
                                                  initializer=_lower_priority)
            mv.predictor = await asyncio.get_running_loop().run_in_executor(
                self._loader, load_verified, path, self.cfg.threads)
        except HmffEdgeError as exc:
            mv.state, mv.reason = UNAVAILABLE, str(exc)
            self.models[name][version] = mv
            log.warning("model %s version %d failed to load and is not served: %s",
                        name, version, exc)
            return
        mv.load_seconds = time.perf_counter() - t0
        self._activate(mv)
        self.models[name][version] = mv
        log.info("model %s version %d is READY (%.2f s)", name, version, mv.load_seconds)

    def _retire(self, mv: ModelVersion, why: str) -> None:
        mv.state, mv.reason = UNLOADING, why
        task = asyncio.get_running_loop().create_task(self._drain(mv))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _drain(self, mv: ModelVersion) -> None:
        mv._drained = asyncio.Event()
        if mv.inflight:
            await mv._drained.wait()
        if mv.batcher is not None:
            await mv.batcher.stop()
        versions = self.models.get(mv.model, {})
        if versions.get(mv.version) is mv:
            del versions[mv.version]
        if not versions:
            self.models.pop(mv.model, None)
        mv.predictor = mv.batcher = None
        log.info("model %s version %d unloaded (%s)", mv.model, mv.version, mv.reason)

    async def poll(self, interval: float) -> None:
        """Re-scan the repository every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except HmffEdgeError as exc:  # the repository folder itself went away
                log.warning("model repository: %s", exc)

    async def load_model(self, name: str) -> None:
        """Repository extension ``load``: (re)read one model from disk; 400 when none of
        its versions becomes READY."""
        self.unloaded.discard(name)
        await self.sync(only=name)
        versions = self.models.get(name, {})
        if not any(mv.state == READY for mv in versions.values()):
            reasons = "; ".join(f"version {v}: {mv.reason}" for v, mv in sorted(versions.items()))
            raise HTTPError(400, f"model {name!r} could not be loaded"
                                 + (f": {reasons}" if reasons else ": not in the repository"))

    async def unload_model(self, name: str) -> None:
        """Repository extension ``unload``: drain and stop every version of ``name``."""
        versions = self.versions(name)
        self.unloaded.add(name)
        for mv in list(versions.values()):
            if mv.state != UNLOADING:
                self._retire(mv, "unloaded")
