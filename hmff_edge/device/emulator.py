"""``emulate`` / ``stop`` / ``status``: an emulated Raspberry Pi reached over ssh on 127.0.0.1.

``emulate`` checks root, host tools, space and the port before any work, builds or reuses
the cached root, writes the board's CPU description into it, mounts, starts the root's sshd
and proves with a probe model over ssh that LiteRT starts XNNPACK there. Any failure undoes
the mounts and stops sshd. ``running.json`` records what runs, for ``status``, ``stop``
and ``bench --host`` (which takes the emulator's key and known_hosts from it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hmff_edge.device import binfmt, checks, mounts, rootfs, sshd, wheels, xnnpack
from hmff_edge.device.errors import EmulatorError
from hmff_edge.device.layout import MARKER, VENV, JsonRecord, Layout
from hmff_edge.device.targets import Target, get_target

INFER = "/opt/hmff-edge/infer.py"
PROBE = "/opt/hmff-edge/probe_int8.tflite"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
_NOTABLE_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
                  "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8")


@dataclass
class EmulatorInfo(JsonRecord):
    """A running emulated device (``running.json``; ``--json`` of ``device emulate``)."""

    target: str
    board: str
    cpu: str  # QEMU_CPU
    host: str  # what --host takes
    port: int
    user: str
    pid: int
    root: str
    key: str
    known_hosts: str
    runner_cpu: str  # the CPU model the runner reads inside the root
    host_cpu: str
    host_cpu_flags: list[str] = field(default_factory=list)
    pins: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    binfmt_mounted: bool = False
    started: str = ""
    setup_s: dict[str, float] = field(default_factory=dict)
    label: str = ""

    @property
    def ssh_options(self) -> list[str]:
        return [f"UserKnownHostsFile={self.known_hosts}"]

    def bench_hint(self) -> str:
        """The bench command line that uses this emulator."""
        return (f"hmff-edge bench MODEL --device rpi --profile {self.target} "
                f"--host {self.host}")

    def ssh_hint(self) -> str:
        return (f"ssh -p {self.port} -i {self.key} -o UserKnownHostsFile={self.known_hosts} "
                f"{self.user}@127.0.0.1")


@dataclass
class Status:
    """What ``device status`` reports."""

    running: bool
    info: EmulatorInfo | None
    problems: list[str]
    cache: str
    root_built: bool
    root_pins: dict[str, str] | None

    def to_dict(self) -> dict:
        return {"running": self.running, "info": self.info.to_dict() if self.info else None,
                "problems": self.problems, "cache": self.cache, "root_built": self.root_built,
                "root_pins": self.root_pins}


@dataclass
class StopReport:
    """What ``device stop`` did."""

    was_running: bool
    target: str | None
    killed: list[int]
    unmounted: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def emulation_label(qemu_cpu: str) -> str:
    """The label every bench output of an emulated device carries."""
    return f"emulated arm64 ({qemu_cpu}), not device timing"


# --------------------------------------------------------------------------- processes
def processes_in_root(root: Path, proc: Path = Path("/proc")) -> list[int]:
    """PIDs whose root directory is ``root`` (sshd and every session it started)."""
    want = os.path.realpath(root)
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "root") == want:
                pids.append(int(entry.name))
        except OSError:
            continue
    return sorted(pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate(pids: list[int], timeout: float = 10.0) -> list[int]:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        _reap()
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    _reap()
    return pids


def _reap() -> None:
    # sshd may be our own child (a failed start in this process): collect it.
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


# --------------------------------------------------------------------------- host facts
def host_cpu() -> tuple[str, list[str]]:
    """The host CPU model and its notable SIMD flags."""
    from hmff_edge.bench.runner import hardware_info

    text = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() \
        else ""
    m = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    flags = set(m.group(1).split()) if m else set()
    return str(hardware_info().get("cpu_model")), [f for f in _NOTABLE_FLAGS if f in flags]


# --------------------------------------------------------------------------- root files
def prepare_root(layout: Layout, target: Target, host_model: str, flags: list[str]) -> Path:
    """Write the board's CPU files, the emulation marker, the runner's ``python3`` and the
    probe into the root; returns the cpuinfo file to bind over /proc/cpuinfo."""
    cpu_dir = layout.root / "sys" / "devices" / "system" / "cpu"
    cpu_dir.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present"):
        (cpu_dir / name).write_text(target.cpu_list())
    cpuinfo = layout.build / f"cpuinfo-{target.name}"
    cpuinfo.write_text(target.cpuinfo())
    marker = layout.in_root(MARKER)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({
        "emulated": True, "target": target.name, "board": target.board,
        "qemu_cpu": target.qemu_cpu, "label": emulation_label(target.qemu_cpu),
        "runner_cpu": target.cpu_label, "host_cpu": host_model, "host_cpu_flags": flags,
        "emulator": "qemu-user (qemu-aarch64-static)"}, indent=1) + "\n")
    # The bench profiles call "python3": make that the venv with the pinned runtime.
    wrapper = layout.in_root("/usr/local/bin/python3")
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(f'#!/bin/sh\nexec {VENV}/bin/python3 "$@"\n')
    wrapper.chmod(0o755)
    here = Path(__file__).parent
    shutil.copy2(here / "_infer.py", layout.in_root(INFER))
    shutil.copy2(here / "probe_int8.tflite", layout.in_root(PROBE))
    sshd.install_config(layout)
    return cpuinfo


# --------------------------------------------------------------------------- status
def status(layout: Layout | None = None) -> Status:
    """Whether an emulator runs, and what is wrong when its state and the system disagree."""
    layout = layout or Layout.default()
    info = EmulatorInfo.load(layout.state)
    manifest = rootfs.RootManifest.load(layout.manifest)
    problems: list[str] = []
    running = False
    if info is not None:
        pids = processes_in_root(layout.root) if layout.root.exists() else []
        # Without root the other processes' /proc/PID/root cannot be read: trust the pid.
        running = info.pid in pids or (os.geteuid() != 0 and _alive(info.pid))
        if not running:
            problems.append(f"the {info.target} emulator recorded in {layout.state} is not "
                            f"running (sshd pid {info.pid} gone)")
    left = mounts.mounted_under(layout.root) if layout.root.exists() else []
    if left and not running:
        problems.append(f"mounts left under the root: {', '.join(left)}")
    if problems:
        problems.append("run 'hmff-edge device stop' to clean up")
    return Status(running=running, info=info, problems=problems, cache=str(layout.base),
                  root_built=rootfs.base_ready(layout) and rootfs.venv_ready(layout),
                  root_pins=manifest.pins if manifest else None)


def lookup(host: str, port: int | None, layout: Layout | None = None) -> EmulatorInfo | None:
    """The running emulator that ``host``/``port`` names (127.0.0.1 or localhost), if any."""
    if host not in LOCAL_HOSTS or port is None:
        return None
    layout = layout or Layout.default()
    info = EmulatorInfo.load(layout.state)
    return info if info is not None and info.port == port else None


# --------------------------------------------------------------------------- stop
def stop(layout: Layout | None = None) -> StopReport:
    """End sshd and every process in the root, undo the mounts, forget the state."""
    layout = layout or Layout.default()
    info = EmulatorInfo.load(layout.state)
    pids = processes_in_root(layout.root) if layout.root.exists() else []
    left = mounts.mounted_under(layout.root) if layout.root.exists() else []
    if info is None and not pids and not left:
        return StopReport(was_running=False, target=None, killed=[], unmounted=[])
    checks.require_root("device stop")
    _terminate(pids)
    unmounted = mounts.mounted_under(layout.root)
    mounts.unmount_root(layout.root)
    if info is not None:
        binfmt.release(info.binfmt_mounted)
    layout.state.unlink(missing_ok=True)
    layout.known_hosts.unlink(missing_ok=True)
    return StopReport(was_running=bool(info and info.pid in pids),
                      target=info.target if info else None, killed=pids, unmounted=unmounted)


# --------------------------------------------------------------------------- emulate
def _preflight(action: str) -> None:
    checks.require_root(action)
    checks.require_tools()


def _ensure_root(layout: Layout, pins: dict[str, str], target: Target, **kwargs):
    """:func:`rootfs.ensure_root` with arm64 programs runnable: debootstrap's second stage
    and the root's pip run inside it, and on a host whose binfmt_misc is not mounted they
    fail with 'Unable to execute target architecture'."""
    mounted = binfmt.ensure(layout.root)
    try:
        return rootfs.ensure_root(layout, pins, target.qemu_cpu, **kwargs)
    finally:
        binfmt.release(mounted)


@contextlib.contextmanager
def _mounted(layout: Layout, target: Target, log) -> Iterator[tuple[list[str], bool]]:
    """Root files, binfmt and mounts; undone when the body raises, kept when it returns
    (a started emulator keeps them until ``stop``)."""
    host_model, flags = host_cpu()
    cpuinfo = prepare_root(layout, target, host_model, flags)
    mounted_binfmt = binfmt.ensure(layout.root)
    try:
        done = mounts.mount_all(mounts.plan(layout.root, cpuinfo))
    except BaseException:
        binfmt.release(mounted_binfmt)
        raise
    try:
        yield done, mounted_binfmt
    except BaseException:
        _undo(layout, mounted_binfmt)
        raise


def _undo(layout: Layout, mounted_binfmt: bool) -> None:
    _terminate(processes_in_root(layout.root))
    mounts.unmount_root(layout.root)
    binfmt.release(mounted_binfmt)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _already_running(layout: Layout, target: Target, port: int | None, log) -> EmulatorInfo | None:
    st = status(layout)
    if st.running and st.info is not None:
        if st.info.target == target.name and port in (None, st.info.port):
            log(f"the {target.name} emulator is already running on port {st.info.port}")
            return st.info
        raise EmulatorError(f"the {st.info.target} emulator is already running on 127.0.0.1:"
                            f"{st.info.port}; run 'hmff-edge device stop' first")
    if st.problems:
        log("cleaning up a previous emulator that did not stop: " + "; ".join(st.problems[:-1]))
        stop(layout)
    return None


def emulate(name: str, *, port: int | None = None, rebuild: bool = False,
            layout: Layout | None = None, log=None) -> EmulatorInfo:
    """Start (or return the running) emulated ``name`` (rpi4 | rpi5); see the module doc."""
    log = log or _log
    target = get_target(name)
    _preflight("device emulate")
    layout = layout or Layout.default()
    if port is not None:
        checks.require_free_port(port)
    running = _already_running(layout, target, port, log)
    if running is not None:
        return running
    if rebuild and mounts.mounted_under(layout.root):
        raise EmulatorError("the root is in use (mounted); 'hmff-edge device stop' first")
    t0 = time.monotonic()
    pins = wheels.host_pins()
    manifest = _ensure_root(layout, pins, target, rebuild=rebuild, log=log)
    t_root = time.monotonic() - t0
    port = port or checks.free_port()
    with _mounted(layout, target, log) as (done, mounted_binfmt):
        proc = sshd.start(layout, port, target.qemu_cpu)
        sshd.wait_listening(proc, port, layout)
        sshd.write_known_hosts(layout, port)
        t1 = time.monotonic()
        probe_over_ssh(layout, port, target)
        host_model, flags = host_cpu()
        info = EmulatorInfo(
            target=target.name, board=target.board, cpu=target.qemu_cpu,
            host=f"{sshd.USER}@127.0.0.1:{port}", port=port, user=sshd.USER, pid=proc.pid,
            root=str(layout.root), key=str(layout.client_key),
            known_hosts=str(layout.known_hosts), runner_cpu=target.cpu_label,
            host_cpu=host_model, host_cpu_flags=flags, pins=manifest.pins, mounts=done,
            binfmt_mounted=mounted_binfmt, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            setup_s={"root": round(t_root, 1), "probe": round(time.monotonic() - t1, 1),
                     "total": round(time.monotonic() - t0, 1),
                     # what building the cached root took, whenever that was
                     **{f"root_built_{k}": v for k, v in manifest.seconds.items()}},
            label=emulation_label(target.qemu_cpu))
        info.save(layout.state)
    return info


def probe_over_ssh(layout: Layout, port: int, target: Target, timeout: float = 180) -> dict:
    """Run the probe model through ssh; raise unless XNNPACK started with the board's CPU."""
    cmd = sshd.ssh_command(layout, port, f"python3 {INFER} probe {PROBE}")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise EmulatorError(f"the probe over ssh did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise EmulatorError(f"the probe over ssh to 127.0.0.1:{port} failed (exit "
                            f"{proc.returncode}): {proc.stderr.strip()[-800:]}")
    xnnpack.require_started(proc.stderr, f"in the emulated {target.name}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out.get("machine") != "aarch64" or out.get("qemu_cpu") != target.qemu_cpu:
        raise EmulatorError(f"the probe ran on {out.get('machine')} with QEMU_CPU="
                            f"{out.get('qemu_cpu')}, expected aarch64 and {target.qemu_cpu}")
    return out


# --------------------------------------------------------------------------- one-off runs
@contextlib.contextmanager
def session(name: str, layout: Layout | None = None, log=None) -> Iterator[Runner]:
    """A usable root for ``name`` for the duration of the block: the running emulator's
    mounts when it is that board, else mounts made here and undone afterwards."""
    log = log or _log
    target = get_target(name)
    layout = layout or Layout.default()
    st = status(layout)
    if st.running and st.info is not None:
        if st.info.target != target.name:
            raise EmulatorError(f"the {st.info.target} emulator is running; 'hmff-edge device "
                                f"stop' first to use {target.name}")
        yield Runner(layout, target)
        return
    _preflight(f"verification on {name}")
    if st.problems:
        stop(layout)
    _ensure_root(layout, wheels.host_pins(), target, log=log)
    with _mounted(layout, target, log) as (_, mounted_binfmt):
        try:
            yield Runner(layout, target)
        finally:
            _undo(layout, mounted_binfmt)


@dataclass
class Runner:
    """Runs commands inside a mounted root with the board's QEMU_CPU."""

    layout: Layout
    target: Target

    def run(self, argv: list[str], timeout: float = 3600) -> subprocess.CompletedProcess:
        cmd = rootfs.chroot_command(self.layout.root, argv, self.target.qemu_cpu)
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env=rootfs.chroot_env(self.target.qemu_cpu),
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise EmulatorError(f"{argv[0]} in the emulated {self.target.name} did not finish "
                                f"within {timeout:.0f} s") from exc
