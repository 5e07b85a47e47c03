"""The real emulated Raspberry Pi 4: build or reuse the arm64 root, start it, bench one model
over ssh, verify it against this host, show the loud failure when XNNPACK cannot start, stop.

Marked ``arm64`` and ``slow`` (about a minute with a cached root; the first build takes 5-16
minutes and ~550 MB under $XDG_CACHE_HOME/hmff-edge/device). Skipped cleanly without root,
qemu-user-static, binfmt-support, debootstrap or OpenSSH.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hmff_edge.cli import app

pytestmark = [pytest.mark.arm64, pytest.mark.slow]

PROBE = Path(__file__).resolve().parents[1] / "hmff_edge" / "device" / "probe_int8.tflite"
LABEL = "emulated arm64 (cortex-a72), not device timing"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, mount)"
    for tool, pkg in (("qemu-aarch64-static", "qemu-user-static"), ("debootstrap", "debootstrap"),
                      ("update-binfmts", "binfmt-support"), ("ssh", "openssh-client")):
        if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
            return f"{tool} missing (apt-get install {pkg})"
    return None


@pytest.fixture(scope="module")
def emulated():
    why = _missing()
    if why:
        pytest.skip(why)
    from hmff_edge.device import emulate, status, stop

    was_running = status().running
    info = emulate("rpi4", log=lambda m: None)
    try:
        yield info
    finally:
        if not was_running:
            stop()


def test_bench_over_ssh_is_labelled(emulated, tmp_path):
    r = CliRunner().invoke(app, ["bench", str(PROBE), "--device", "rpi", "--host", emulated.host,
                                 "--batch-sizes", "1,2", "--runs", "5", "--json",
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)["results"]
    assert res["device"]["label"].startswith(LABEL)
    assert res["hardware"]["machine"] == "aarch64"
    assert res["hardware"]["cpu_model"] == emulated.runner_cpu
    assert res["hardware"]["emulation"]["host_cpu"] == emulated.host_cpu
    assert [t["outcome"] for t in res["sweep"]["trials"]] == ["ok", "ok"]


def test_verification_matches_the_host(emulated):
    from hmff_edge.device.verify import verify_on

    x = np.random.default_rng(0).standard_normal((12, 8, 8, 3)).astype(np.float32)
    (cmp,) = verify_on("rpi4", [(PROBE, "int8")], x)
    assert cmp.passed, cmp.failures
    assert cmp.unit == "steps" and cmp.max_diff <= 1 and cmp.images == 12


def test_xnnpack_fallback_fails_loudly(emulated):
    from hmff_edge.device.errors import XnnpackError
    from hmff_edge.device.verify import verify_on

    possible = Path(emulated.root) / "sys" / "devices" / "system" / "cpu" / "possible"
    saved = possible.read_text()
    possible.write_text("")
    try:
        with pytest.raises(XnnpackError, match="XNNPACK did not start in the emulated rpi4"):
            verify_on("rpi4", [(PROBE, "int8")], np.zeros((2, 8, 8, 3), np.float32))
    finally:
        possible.write_text(saved)


def test_status_reports_it(emulated):
    r = CliRunner().invoke(app, ["device", "status", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["running"] and data["info"]["port"] == emulated.port
