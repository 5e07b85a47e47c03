"""Run the self-contained runner on a remote device with the system ``ssh`` and ``scp``.

Copies the model file and ``runner.py`` into a fresh temporary folder on the device, runs
``python3 runner.py sweep ...`` there (each trial still in its own child, on the device),
brings back its JSON on stdout and removes the folder. Non-interactive: ``BatchMode=yes``,
so authentication must be by key (``--ssh-key`` or the user's agent/default keys).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from hmff_edge.bench import runner
from hmff_edge.device.layout import MARKER as EMULATION_MARKER
from hmff_edge.errors import ConfigError, UnavailableError

_HOST = re.compile(r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9._:\[\]-]+?)"
                   r"(?::(?P<port>\d+))?$")


class RemoteError(UnavailableError):
    """ssh/scp or the remote runner failed; the message quotes what the device said (exit 5)."""


@dataclass
class RemoteTarget:
    """``USER@HOST[:PORT]`` plus how to reach it."""

    host: str
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    python: str = "python3"
    options: list[str] = field(default_factory=list)  # extra ``-o Key=Value``
    connect_timeout: int = 15

    @classmethod
    def parse(cls, spec: str, **kw) -> RemoteTarget:
        m = _HOST.match(spec.strip())
        if not m or not m.group("host"):
            raise ConfigError(f"--host must look like USER@HOST or USER@HOST:PORT, got {spec!r}")
        port = kw.pop("port", None) or (int(m.group("port")) if m.group("port") else None)
        return cls(host=m.group("host"), user=m.group("user"), port=port, **kw).with_emulator()

    def with_emulator(self) -> RemoteTarget:
        """An emulated device on this host:port (``hmff-edge device emulate``) brings its own
        key and known_hosts, so ``--host`` alone reaches it."""
        from hmff_edge.device.emulator import lookup

        info = lookup(self.host, self.port)
        if info is not None and not self.identity:
            self.identity = info.key
            self.options = [*info.ssh_options, *self.options]
        return self

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def _common(self, port_flag: str) -> list[str]:
        args = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "StrictHostKeyChecking=accept-new"]
        if self.port:
            args += [port_flag, str(self.port)]
        if self.identity:
            args += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        for opt in self.options:
            args += ["-o", opt]
        return args

    def ssh(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        exe = _which("ssh")
        cmd = [exe, *self._common("-p"), self.destination, command]
        return _run(cmd, timeout, f"ssh {self.destination}")

    def scp(self, files: list[str], remote_dir: str, timeout: float) -> None:
        exe = _which("scp")
        cmd = [exe, "-q", "-r", *self._common("-P"), *files, f"{self.destination}:{remote_dir}/"]
        proc = _run(cmd, timeout, f"scp to {self.destination}")
        if proc.returncode != 0:
            raise RemoteError(f"scp to {self.destination}:{remote_dir} failed "
                              f"(exit {proc.returncode}): {proc.stderr.strip()[-800:]}")


def _which(name: str) -> str:
    exe = shutil.which(name)
    if not exe:
        raise ConfigError(f"--host needs the system {name!r} client, which is not on PATH "
                          f"(Debian: apt-get install openssh-client)")
    return exe


def _run(cmd: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise RemoteError(f"{what} did not finish within {timeout:.0f} s") from exc


def parse_workdir(stdout: str) -> tuple[str, dict | None]:
    """The folder ``mktemp`` printed and the emulation marker after it (None on a board)."""
    lines = stdout.strip().splitlines()
    at = max((i for i, ln in enumerate(lines) if ln.startswith("/tmp/hmff-bench.")),
             default=len(lines) - 1)
    try:
        marker = json.loads("\n".join(lines[at + 1:]) or "null")
    except ValueError:
        marker = None
    return lines[at].strip(), marker if isinstance(marker, dict) else None


def remote_sweep(target: RemoteTarget, model: str, *, runtime: str, threads: int,
                 batch_sizes: str, max_batch: int, runs: int, seconds: float, warmup: int,
                 memory_limit: int | None, trial_timeout: float = 900.0,
                 timeout: float = 3600.0) -> runner.ModelRecord:
    """Copy ``model`` and the runner to ``target``, run the sweep there, return its record
    (the runner prints it as JSON; the local model path replaces the device's)."""
    model_path = Path(model)
    if not model_path.exists():
        raise ConfigError(f"model file {model!r} does not exist")
    # One round trip: the work folder, and the marker an emulated root carries.
    proc = target.ssh(f"mktemp -d /tmp/hmff-bench.XXXXXX && {{ cat {EMULATION_MARKER} "
                      f"2>/dev/null || true; }}", timeout=60)
    if proc.returncode != 0:
        raise RemoteError(f"cannot reach {target.destination} (ssh exit {proc.returncode}): "
                          f"{proc.stderr.strip()[-800:]}")
    rdir, emulation = parse_workdir(proc.stdout)
    try:
        target.scp([str(model_path), os.path.abspath(runner.__file__)], rdir, timeout=timeout)
        rmodel = f"{rdir}/{model_path.name}"
        args = [target.python, f"{rdir}/runner.py", "sweep", "--model", rmodel,
                "--runtime", runtime, "--threads", str(threads), "--batch-sizes",
                str(batch_sizes), "--max-batch", str(max_batch), "--runs", str(runs),
                "--seconds", str(seconds), "--warmup", str(warmup), "--device", "rpi",
                "--trial-timeout", str(trial_timeout)]
        if memory_limit:
            args += ["--memory-limit", str(memory_limit)]
        remote_cmd = shlex.join(args)
        proc = target.ssh(remote_cmd, timeout=timeout)
        if proc.returncode != 0:
            raise RemoteError(f"the runner failed on {target.destination} (exit "
                              f"{proc.returncode}): {proc.stderr.strip()[-1500:]}")
        try:
            result = runner.ModelRecord.from_dict(json.loads(proc.stdout))
        except ValueError as exc:
            raise RemoteError(f"the runner on {target.destination} printed no bench record: "
                              f"{exc}: {proc.stdout[-500:]!r} / {proc.stderr[-500:]!r}"
                              ) from exc
        result.remote_command = remote_cmd
        if emulation:
            result.hardware["emulation"] = emulation
        result.model_file["path"] = str(model_path)
        return result
    finally:
        target.ssh(f"rm -rf {shlex.quote(rdir)}", timeout=60)
