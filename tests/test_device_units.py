"""The emulated Raspberry Pi's pieces that need no root: board files, cache paths, checks
and their messages, wheel pins and pip commands, mount bookkeeping, state, XNNPACK detection,
the comparison of outputs, and the CLI's errors."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hmff_edge.cli import app
from hmff_edge.device import binfmt, checks, emulator, mounts, rootfs, wheels, xnnpack
from hmff_edge.device.errors import (
    EmulatorError,
    MissingToolError,
    NeedsRootError,
    NoSpaceError,
    PortInUseError,
    StaleRootError,
    XnnpackError,
)
from hmff_edge.device.layout import Layout, cache_root
from hmff_edge.device.targets import TARGETS, get_target
from hmff_edge.device.verify import compare_outputs, tolerance_for
from hmff_edge.errors import ConfigError

runner = CliRunner()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Layout:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return Layout.default()


# --------------------------------------------------------------------------- boards, paths
def test_targets_describe_the_boards():
    a72, a76 = TARGETS["rpi4"], TARGETS["rpi5"]
    assert (a72.qemu_cpu, a76.qemu_cpu) == ("cortex-a72", "cortex-a76")
    info = a72.cpuinfo()
    assert info.count("processor\t:") == 4 and "CPU part\t: 0xd08" in info
    assert "model name" not in info and "Model\t\t: qemu-user cortex-a72" in info
    assert "0xd0b" in a76.cpuinfo() and "asimddp" in a76.cpuinfo()
    assert a72.cpu_list() == "0-3\n"
    with pytest.raises(ConfigError, match="rpi4, rpi5"):
        get_target("rpi3")


def test_cache_follows_xdg(tmp_path):
    assert cache_root({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "hmff-edge" / "device"
    assert cache_root({}).parts[-3:] == (".cache", "hmff-edge", "device")
    lay = Layout(tmp_path)
    assert lay.in_root("/etc/x") == lay.root / "etc" / "x"
    assert lay.partial.parent == lay.build.parent and lay.partial != lay.build


# --------------------------------------------------------------------------- checks
def test_not_root_says_so():
    with pytest.raises(NeedsRootError, match="needs root.*uid is 1000"):
        checks.require_root("device emulate", euid=1000)
    checks.require_root("device emulate", euid=0)


def test_missing_tools_name_debian_packages(monkeypatch):
    monkeypatch.setattr(checks, "SBIN_DIRS", ())
    with pytest.raises(MissingToolError) as exc:
        checks.require_tools(which=lambda name: None)
    msg = str(exc.value)
    assert "apt-get install -y" in msg
    for pkg in ("qemu-user-static", "binfmt-support", "debootstrap", "openssh-client"):
        assert pkg in msg
    checks.require_tools(["debootstrap"], which=lambda name: f"/usr/bin/{name}")


def test_port_in_use_and_bad_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is in use"):
            checks.require_free_port(port)
    with pytest.raises(PortInUseError, match="between 1 and 65535"):
        checks.require_free_port(70000)
    free = checks.free_port()
    assert checks.require_free_port(free) == free


def test_no_space_names_the_folder(tmp_path):
    with pytest.raises(NoSpaceError, match="GiB is free"):
        checks.require_space(tmp_path / "not" / "yet", need=2**62)
    checks.require_space(tmp_path / "not" / "yet", need=1)


# --------------------------------------------------------------------------- wheels
def test_pins_follow_the_host_and_skip_extras():
    versions = {"ai-edge-litert": "2.3.0", "numpy": "2.4.6", "flatbuffers": "25.1"}
    requires = {"ai-edge-litert": ["numpy>=1.23", "flatbuffers", "tqdm",
                                   'pytest; extra == "test"'], "numpy": []}

    def version(name):
        if name not in versions:
            raise wheels.metadata.PackageNotFoundError(name)
        return versions[name]

    pins = wheels.host_pins(version=version, requires=requires.get)
    assert pins == {"ai-edge-litert": "2.3.0", "flatbuffers": "25.1", "numpy": "2.4.6"}
    with pytest.raises(EmulatorError, match="not installed on this host"):
        wheels.host_pins(("onnxruntime",), version=version, requires=requires.get)


def test_download_names_every_manylinux_tag():
    cmd = wheels.download_command({"ai-edge-litert": "2.3.0"}, "/w", pip=["pip"])
    tags = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"]
    assert "manylinux_2_27_aarch64" in tags and "manylinux_2_17_aarch64" in tags
    assert "manylinux_2_36_aarch64" in tags and "manylinux_2_37_aarch64" not in tags
    assert tags[-2:] == ["manylinux2014_aarch64", "any"]
    assert cmd[:2] == ["pip", "download"] and "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.11" and cmd[-1] == "ai-edge-litert==2.3.0"
    inst = wheels.install_command({"numpy": "2.4.6"}, "/tmp/w", "/opt/v")
    assert "--no-index" in inst and inst[-1] == "numpy==2.4.6"
    assert wheels.pins_key({"a": "1"}) == wheels.pins_key({"a": "1"}) != wheels.pins_key({"a": "2"})


def test_stale_root_is_refused_with_the_fix(cache):
    for p in ("usr/bin/python3", "usr/sbin/sshd", "opt/hmff-edge/venv/bin/python"):
        (cache.root / p).parent.mkdir(parents=True, exist_ok=True)
        (cache.root / p).write_text("")
    (cache.root / "usr/lib/python3.11/venv").mkdir(parents=True)
    rootfs.RootManifest(pins={"ai-edge-litert": "2.2.0", "numpy": "2.4.6"}).save(cache.manifest)
    with pytest.raises(StaleRootError) as exc:
        rootfs.ensure_root(cache, {"ai-edge-litert": "2.3.0", "numpy": "2.4.6"}, "cortex-a72",
                           log=lambda m: None)
    assert "ai-edge-litert 2.2.0 in the root, 2.3.0 on the host" in str(exc.value)
    assert "--rebuild" in str(exc.value)
    same = rootfs.ensure_root(cache, {"ai-edge-litert": "2.2.0", "numpy": "2.4.6"},
                              "cortex-a72", log=lambda m: None)
    assert same.pins["ai-edge-litert"] == "2.2.0"


def test_chroot_command_has_a_clean_environment(monkeypatch):
    monkeypatch.setattr(checks, "tool", lambda name: f"/usr/sbin/{name}")
    cmd = rootfs.chroot_command(Path("/r"), ["python3", "-V"], "cortex-a76")
    assert cmd[:5] == ["/usr/sbin/chroot", "/r", "/usr/bin/env", "-i", cmd[4]]
    assert "QEMU_CPU=cortex-a76" in cmd and cmd[-2:] == ["python3", "-V"]
    assert not any(a.startswith("PIP_") for a in cmd)
    assert rootfs.chroot_env("cortex-a76")["QEMU_CPU"] == "cortex-a76"
    deb = rootfs.debootstrap_command(Path("/r"))
    assert "--arch=arm64" in deb and "bookworm" in deb and "--include=python3,python3-venv," \
        "openssh-server" in deb


# --------------------------------------------------------------------------- mounts
MOUNTINFO = """\
22 1 0:21 / /proc rw - proc proc rw
90 30 0:5 / /c/root rw - ext4 /dev/vda rw
91 90 0:50 / /c/root/proc rw - proc proc rw
92 91 0:5 /c/cpuinfo /c/root/proc/cpuinfo rw - ext4 /dev/vda rw
93 90 0:6 / /c/root/dev rw - devtmpfs udev rw
94 30 0:7 / /c/rootfs2/dev rw - devtmpfs udev rw
95 30 0:8 / /c/my\\040root/proc rw - proc proc rw
"""


def test_mounted_under_is_deepest_first_and_exact():
    assert mounts.mounted_under(Path("/c/root"), MOUNTINFO) == [
        "/c/root/dev", "/c/root/proc/cpuinfo", "/c/root/proc", "/c/root"]
    assert mounts.mounted_under(Path("/c/my root"), MOUNTINFO) == ["/c/my root/proc"]
    assert mounts.mounted_under(Path("/elsewhere"), MOUNTINFO) == []


def test_plan_binds_cpuinfo_but_not_sys():
    plan = mounts.plan(Path("/r"), Path("/c/cpuinfo-rpi4"))
    assert [m.target for m in plan] == ["/r/proc", "/r/proc/cpuinfo", "/r/dev"]
    assert plan[0].command() == ["mount", "-t", "proc", "proc", "/r/proc"]
    assert plan[1].command() == ["mount", "--bind", "/c/cpuinfo-rpi4", "/r/proc/cpuinfo"]
    assert not any("sys" in m.target for m in plan)


def test_failed_mount_undoes_the_earlier_ones():
    calls = []

    def run(cmd):
        calls.append(cmd)
        if cmd[0] == "mount" and cmd[-1] == "/r/dev":
            raise EmulatorError("mount failed")

    with pytest.raises(EmulatorError):
        mounts.mount_all(mounts.plan(Path("/r"), Path("/c/ci")), run=run)
    assert calls[-2:] == [["umount", "/r/proc/cpuinfo"], ["umount", "/r/proc"]]


def test_unmount_root_reports_what_stays():
    def run(cmd):
        if cmd[-1] == "/c/root/dev":
            raise EmulatorError("busy")

    with pytest.raises(EmulatorError, match="could not unmount /c/root/dev"):
        mounts.unmount_root(Path("/c/root"), run=run, mountinfo=MOUNTINFO)


def test_safe_rmtree_refuses_a_mounted_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(rootfs, "mounted_under", lambda p: [f"{p}/dev"])
    with pytest.raises(EmulatorError, match="refusing to delete"):
        rootfs.safe_rmtree(tmp_path)
    assert tmp_path.exists()


def test_binfmt_entry_parse():
    e = binfmt.Entry.parse("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n"
                           "flags: PF\noffset 0\n")
    assert e.enabled and e.flags == "PF" and e.interpreter.endswith("aarch64-binfmt-P")
    assert not binfmt.Entry.parse("disabled\nflags: \n").enabled


# --------------------------------------------------------------------------- xnnpack
def test_xnnpack_detection():
    ok = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
    bad = ("Error in cpuinfo: failed to parse the list of possible processors in "
           "/sys/devices/system/cpu/possible\n" + ok)
    assert xnnpack.started(ok) and not xnnpack.started(bad) and not xnnpack.started("")
    with pytest.raises(XnnpackError, match="sys/devices/system/cpu/possible.*reference kernels"):
        xnnpack.require_started(bad, "in the emulated rpi4")
    with pytest.raises(XnnpackError, match="no 'Created TensorFlow Lite XNNPACK"):
        xnnpack.require_started("", "in the emulated rpi4")


# --------------------------------------------------------------------------- comparison
def test_int8_outputs_exact_or_within_one_step():
    host = np.array([[-128, 10, 100], [5, 5, 5]], np.int8)
    assert compare_outputs(host, host.copy(), "int8").passed
    near = host.copy()
    near[1, 0] += 1
    c = compare_outputs(host, near, "int8")
    assert c.passed and c.max_diff == 1 and c.unit == "steps"
    far = host.copy()
    far[0, 2] = 0  # 100 steps: the reference-kernel kind of difference; top-1 changes
    c = compare_outputs(host, far, "int8", target="rpi4")
    assert not c.passed and c.max_diff == 100 and c.mismatched_values == 1
    assert "up to 100 quantization steps (limit 1)" in c.failures[0]
    assert c.top1_agreement == 0.5
    assert not compare_outputs(host, near, "int8", steps=0).passed


def test_fp32_within_1e5_and_shape_mismatch():
    host = np.random.default_rng(0).random((4, 10)).astype(np.float32)
    assert compare_outputs(host, host + 5e-6, "none").passed
    c = compare_outputs(host, host + 2e-5, "none")
    assert not c.passed and c.tolerance == 1e-5 and "1e-05 + 1e-5 relative" in c.failures[0]
    ones = np.ones((2, 3), np.float32)
    assert compare_outputs(ones, ones + 1.5e-5, "none").passed  # 1e-5 + 1e-5 * 1
    assert not compare_outputs(ones, ones + 2.5e-5, "none").passed
    q = np.full((2, 3), 0.5, np.float32)  # int8 with float I/O: steps of 1/256, no relative
    assert compare_outputs(q, q + 1 / 256, "int8").passed
    assert not compare_outputs(q, q + 2 / 256, "int8").passed
    c = compare_outputs(host, host[:3], "none", target="rpi5")
    assert not c.passed and "on rpi5" in c.failures[0]
    assert tolerance_for(np.float32, "int8") == ("abs", 1 / 256)
    assert tolerance_for(np.uint8, "int8") == ("steps", 1.0)
    assert tolerance_for(np.float32, "fp16") == ("abs", 1e-5)
    nan = host.copy()
    nan[0, 0] = np.nan
    assert not compare_outputs(host, nan, "none").passed


# --------------------------------------------------------------------------- state, lookup
def _info(cache: Layout, port: int = 40022) -> emulator.EmulatorInfo:
    return emulator.EmulatorInfo(
        target="rpi4", board="Raspberry Pi 4 Model B", cpu="cortex-a72",
        host=f"root@127.0.0.1:{port}", port=port, user="root", pid=999999999,
        root=str(cache.root), key=str(cache.client_key), known_hosts=str(cache.known_hosts),
        runner_cpu="qemu-user cortex-a72", host_cpu="Test CPU",
        label=emulator.emulation_label("cortex-a72"))


def test_state_files_round_trip_and_unusable_ones_read_as_none(cache):
    info = _info(cache)
    assert emulator.EmulatorInfo.load(cache.state) is None  # no file yet
    info.save(cache.state)
    assert emulator.EmulatorInfo.load(cache.state) == info
    assert [p.name for p in cache.base.iterdir()] == ["running.json"]  # no temporary left
    newer = {**json.loads(cache.state.read_text()), "from_a_newer_version": 1}
    cache.state.write_text(json.dumps(newer))
    assert emulator.EmulatorInfo.load(cache.state) == info  # unknown keys are ignored
    for text in ("{not json", "[1, 2]", json.dumps({"target": "rpi4"})):  # the last: fields missing
        cache.state.write_text(text)
        assert emulator.EmulatorInfo.load(cache.state) is None
    cache.manifest.parent.mkdir(parents=True)
    cache.manifest.write_text(json.dumps({"pins": {"numpy": "2"}}))
    assert rootfs.RootManifest.load(cache.manifest) == rootfs.RootManifest(pins={"numpy": "2"})


def test_lookup_finds_the_emulator_by_port(cache):
    cache.base.mkdir(parents=True)
    _info(cache).save(cache.state)
    assert emulator.lookup("127.0.0.1", 40022, cache).port == 40022
    assert emulator.lookup("localhost", 40022, cache) is not None
    assert emulator.lookup("127.0.0.1", 40023, cache) is None
    assert emulator.lookup("pi.local", 40022, cache) is None
    assert emulator.lookup("127.0.0.1", None, cache) is None


def test_bench_host_takes_the_emulator_key(cache):
    from hmff_edge.bench.ssh import RemoteTarget

    cache.base.mkdir(parents=True)
    _info(cache).save(cache.state)
    t = RemoteTarget.parse("root@127.0.0.1:40022")
    assert t.identity == str(cache.client_key)
    assert f"UserKnownHostsFile={cache.known_hosts}" in t.options
    mine = RemoteTarget.parse("root@127.0.0.1:40022", identity="/my/key")
    assert mine.identity == "/my/key"
    assert RemoteTarget.parse("pi@10.0.0.2:40022").identity is None


def test_parse_workdir_reads_the_marker():
    from hmff_edge.bench.ssh import parse_workdir

    marker = {"emulated": True, "qemu_cpu": "cortex-a72"}
    assert parse_workdir("/tmp/hmff-bench.abc123\n" + json.dumps(marker, indent=1)) == (
        "/tmp/hmff-bench.abc123", marker)
    assert parse_workdir("motd line\n/tmp/hmff-bench.x1\n") == ("/tmp/hmff-bench.x1", None)
    assert parse_workdir("/tmp/hmff-bench.x1\nnot json") == ("/tmp/hmff-bench.x1", None)


def test_stale_state_is_reported_by_status(cache):
    cache.base.mkdir(parents=True)
    cache.root.mkdir(parents=True)
    _info(cache).save(cache.state)
    st = emulator.status(cache)
    assert not st.running and "not running" in st.problems[0]
    assert "device stop" in st.problems[-1]


# --------------------------------------------------------------------------- emulate undo
def test_failed_start_undoes_mounts_and_binfmt(cache, monkeypatch):
    done = []
    monkeypatch.setattr(checks, "require_root", lambda action: None)
    monkeypatch.setattr(checks, "require_tools", lambda: None)
    monkeypatch.setattr(wheels, "host_pins", lambda: {"numpy": "2"})
    monkeypatch.setattr(rootfs, "ensure_root",
                        lambda *a, **k: rootfs.RootManifest(pins={"numpy": "2"}))
    monkeypatch.setattr(emulator, "prepare_root", lambda *a: cache.build / "cpuinfo")
    monkeypatch.setattr(binfmt, "ensure", lambda root: True)
    monkeypatch.setattr(binfmt, "release", lambda mounted: done.append(("binfmt", mounted)))
    monkeypatch.setattr(mounts, "mount_all", lambda plan: [m.target for m in plan])
    monkeypatch.setattr(mounts, "unmount_root", lambda root: done.append(("umount", root)))
    monkeypatch.setattr(emulator, "processes_in_root", lambda root: [])

    def no_sshd(*a):
        raise EmulatorError("the emulated sshd exited (status 255): no hostkeys")

    monkeypatch.setattr(emulator.sshd, "start", no_sshd)
    with pytest.raises(EmulatorError, match="no hostkeys"):
        emulator.emulate("rpi4", layout=cache, log=lambda m: None)
    assert ("umount", cache.root) in done and ("binfmt", True) in done
    assert not cache.state.exists()


def test_root_is_built_with_arm64_programs_runnable(cache, monkeypatch):
    """debootstrap's second stage runs arm64 programs: on a host without binfmt_misc
    mounted, building the root before ensuring it failed ('Unable to execute target
    architecture')."""
    events = []
    monkeypatch.setattr(checks, "require_root", lambda action: None)
    monkeypatch.setattr(checks, "require_tools", lambda: None)
    monkeypatch.setattr(wheels, "host_pins", lambda: {"numpy": "2"})
    monkeypatch.setattr(binfmt, "ensure", lambda root: events.append("binfmt") or True)
    monkeypatch.setattr(binfmt, "release", lambda mounted: events.append("release"))

    def build(*a, **k):
        assert events and events[-1] == "binfmt", events
        events.append("root")
        raise EmulatorError("stop here")

    monkeypatch.setattr(rootfs, "ensure_root", build)
    with pytest.raises(EmulatorError, match="stop here"):
        emulator.emulate("rpi4", layout=cache, log=lambda m: None)
    assert events == ["binfmt", "root", "release"]


# --------------------------------------------------------------------------- CLI
def test_cli_unknown_board_and_no_root(monkeypatch, cache):
    r = runner.invoke(app, ["device", "emulate", "rpi3"])
    assert r.exit_code == 2 and "unknown device 'rpi3'" in r.output
    monkeypatch.setattr(checks.os, "geteuid", lambda: 1000)
    r = runner.invoke(app, ["device", "emulate", "rpi4"])
    assert r.exit_code == 5 and "needs root" in r.output


def test_cli_missing_qemu(monkeypatch, cache):
    monkeypatch.setattr(checks.os, "geteuid", lambda: 0)
    monkeypatch.setattr(checks.shutil, "which",
                        lambda n: None if n == "qemu-aarch64-static" else f"/usr/bin/{n}")
    monkeypatch.setattr(checks, "SBIN_DIRS", ())
    r = runner.invoke(app, ["device", "emulate", "rpi5"])
    assert r.exit_code == 4
    assert "missing host program(s) qemu-aarch64-static;" in r.output
    assert r.output.rstrip().endswith("apt-get install -y qemu-user-static")


def test_cli_status_and_stop_with_nothing_running(cache):
    r = runner.invoke(app, ["device", "status", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["running"] is False and data["cache"] == str(cache.base)
    r = runner.invoke(app, ["device", "stop"])
    assert r.exit_code == 0 and "no emulated device was running" in r.output


def test_export_verify_on_is_checked_before_work():
    from hmff_edge.convert import ExportOptions

    with pytest.raises(ConfigError, match="rpi4, rpi5"):
        ExportOptions(formats="tflite", verify_on="rpi9").validate()
    with pytest.raises(ConfigError, match="needs a tflite format"):
        ExportOptions(formats="onnx", verify_on="rpi4").validate()
    with pytest.raises(ConfigError, match="no --no-verify"):
        ExportOptions(formats="tflite", verify_on="rpi4", verify=False).validate()
    ExportOptions(formats="tflite", quantizations="int8", verify_on="rpi5").validate()


def test_cli_emulate_prints_the_host_and_json(cache, monkeypatch):
    import hmff_edge.device as device

    monkeypatch.setattr(device, "emulate", lambda target, port=None, rebuild=False: _info(cache))
    r = runner.invoke(app, ["device", "emulate", "rpi4"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "root@127.0.0.1:40022"
    assert "emulated arm64 (cortex-a72), not device timing" in lines[0]
    assert "--host root@127.0.0.1:40022" in r.stdout
    r = runner.invoke(app, ["device", "emulate", "rpi4", "--json"])
    data = json.loads(r.stdout)
    assert (data["host"], data["port"], data["cpu"]) == ("root@127.0.0.1:40022", 40022,
                                                         "cortex-a72")
