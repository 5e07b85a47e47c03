"""The sshd inside the root: keys, its configuration, starting it and waiting for it.

The sshd is the root's own arm64 OpenSSH under qemu-user, so every session runs in the
emulated userland; ``SetEnv QEMU_CPU`` keeps the board's CPU model in every session
(sshd builds a fresh environment for each one).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from hmff_edge.device import checks
from hmff_edge.device.errors import EmulatorError
from hmff_edge.device.layout import SSHD_CONFIG, Layout
from hmff_edge.device.rootfs import chroot_env

AUTHORIZED_KEYS = "/etc/hmff-edge/authorized_keys"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
USER = "root"

SSHD_CONFIG_TEXT = f"""\
# Written by hmff-edge device emulate: key-only root login on 127.0.0.1.
HostKey {HOST_KEY}
ListenAddress 127.0.0.1
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile {AUTHORIZED_KEYS}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
PidFile none
Subsystem sftp internal-sftp
LogLevel ERROR
"""


def keygen(path: Path) -> None:
    """An ed25519 key pair at ``path`` (and ``path.pub``) unless it exists."""
    if path.exists() and path.with_suffix(".pub").exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    proc = subprocess.run([checks.tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C",
                           "hmff-edge-emulator", "-f", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise EmulatorError(f"ssh-keygen failed for {path}: {proc.stderr.strip()}")


def install_config(layout: Layout) -> None:
    """Host key, client key, authorized_keys and sshd_config inside the root."""
    os.chmod(layout.base, 0o755)
    layout.ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.ssh_dir, 0o700)
    keygen(layout.client_key)
    keygen(layout.in_root(HOST_KEY))
    auth = layout.in_root(AUTHORIZED_KEYS)
    auth.parent.mkdir(parents=True, exist_ok=True)
    auth.write_text(layout.client_key.with_suffix(".pub").read_text())
    os.chmod(auth, 0o600)
    layout.in_root(SSHD_CONFIG).write_text(SSHD_CONFIG_TEXT)
    layout.in_root("/run/sshd").mkdir(parents=True, exist_ok=True)


def sshd_command(layout: Layout, port: int, qemu_cpu: str) -> list[str]:
    """The sshd of the root, in the foreground, on 127.0.0.1:``port``."""
    return [checks.tool("chroot"), str(layout.root), "/usr/sbin/sshd", "-D", "-e", "-f",
            SSHD_CONFIG, "-o", f"Port={port}", "-o", f"SetEnv=QEMU_CPU={qemu_cpu}"]


def start(layout: Layout, port: int, qemu_cpu: str) -> subprocess.Popen:
    """Start sshd in its own session (it outlives this command); output to sshd.log."""
    with open(layout.sshd_log, "ab") as log:
        return subprocess.Popen(sshd_command(layout, port, qemu_cpu), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, env=chroot_env(qemu_cpu),
                                start_new_session=True)


def wait_listening(proc: subprocess.Popen, port: int, layout: Layout,
                   timeout: float = 60) -> None:
    """Until 127.0.0.1:``port`` accepts; :class:`EmulatorError` with sshd's log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmulatorError(f"the emulated sshd exited (status {proc.returncode}): "
                                f"{_log_tail(layout)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.3)
    raise EmulatorError(f"the emulated sshd did not listen on 127.0.0.1:{port} within "
                        f"{timeout:.0f} s: {_log_tail(layout)}")


def _log_tail(layout: Layout) -> str:
    try:
        return layout.sshd_log.read_text(errors="replace").strip()[-800:] or "(no output)"
    except OSError:
        return "(no log)"


def write_known_hosts(layout: Layout, port: int) -> None:
    """The root's host key for ``[127.0.0.1]:port`` in the emulator's own known_hosts."""
    key = layout.in_root(HOST_KEY).with_suffix(".pub").read_text().split()
    layout.known_hosts.write_text(f"[127.0.0.1]:{port} {key[0]} {key[1]}\n")


def client_options(layout: Layout) -> list[str]:
    """``-o`` values for an ssh client of the emulator (its key and known_hosts only)."""
    return [f"UserKnownHostsFile={layout.known_hosts}"]


def ssh_command(layout: Layout, port: int, remote: str) -> list[str]:
    """A complete ``ssh`` call of ``remote`` in the emulated root."""
    cmd = [checks.tool("ssh"), "-p", str(port), "-i", str(layout.client_key),
           "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30"]
    for opt in client_options(layout):
        cmd += ["-o", opt]
    return cmd + [f"{USER}@127.0.0.1", remote]
