"""The ``--host`` path against a real OpenSSH server started on 127.0.0.1 by the test, with
a host key and a client key it makes. Skips cleanly when sshd/ssh are not installed."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _bench_models import tiny_classifier

pytestmark = pytest.mark.ssh

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not os.path.exists(SSHD) or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server "
                    "openssh-client)")
    d = tmp_path_factory.mktemp("sshd")
    os.chmod(d, 0o700)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    cfg = d / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\n")
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        # The privilege-separation directory the Debian service would create at start.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.skip(f"sshd could not start here: {proc.stderr.read()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.skip("sshd did not listen within 15 s")
    yield {"port": port, "key": str(d / "client_key"), "known": str(d / "known_hosts"),
           "user": getpass.getuser()}
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_remote_sweep_over_ssh(sshd, tmp_path):
    from hmff_edge.bench import BenchOptions, bench

    model = tiny_classifier(tmp_path / "tiny.onnx")
    opts = BenchOptions(device="rpi", host=f"{sshd['user']}@127.0.0.1", ssh_port=sshd["port"],
                        ssh_key=sshd["key"], ssh_options=(f"UserKnownHostsFile={sshd['known']}",),
                        remote_python=sys.executable, runs=3, warmup=1, batch_sizes="1,2",
                        memory_limit="2GiB")
    (res,) = bench([str(model)], opts, progress=False, command="test")
    assert res["device"]["emulation"] is False
    assert res["device"]["host"] == f"{sshd['user']}@127.0.0.1"
    assert "measured on the device" in res["device"]["label"]
    assert [t["outcome"] for t in res["sweep"]["trials"]] == ["ok", "ok"]
    assert res["latency"]["count"] == 3 and res["threads"] == 4  # the rpi4 profile
    assert "runner.py sweep" in res["remote_command"]
    assert res["hardware"]["cpu_model"]


def test_unreachable_host_is_a_clear_error(sshd, tmp_path):
    from hmff_edge.bench import BenchOptions, bench
    from hmff_edge.bench.ssh import RemoteError

    model = tiny_classifier(tmp_path / "tiny.onnx")
    wrong = Path(sshd["key"]).with_name("host_key")  # a key the server does not accept
    opts = BenchOptions(device="rpi", host=f"{sshd['user']}@127.0.0.1", ssh_port=sshd["port"],
                        ssh_key=str(wrong), ssh_options=(f"UserKnownHostsFile={sshd['known']}",),
                        runs=2, batch_sizes="1")
    with pytest.raises(RemoteError, match="cannot reach"):
        bench([str(model)], opts, progress=False)
