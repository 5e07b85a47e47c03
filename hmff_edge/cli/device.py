"""``hmff-edge device emulate rpi4|rpi5``, ``device stop``, ``device status``."""

from __future__ import annotations

from typing import Annotated

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import command, print_json
from hmff_edge.cli._options import Opt, json_flag

device_app = typer.Typer(
    help="An emulated Raspberry Pi (Debian arm64 root under qemu-user with the aarch64 "
         "LiteRT) on 127.0.0.1 over ssh, for bench --host and export --verify-on. Its "
         "timings are an emulator's, never a Pi's.",
    no_args_is_help=True)
app.add_typer(device_app, name="device")


_EMULATE_OPTIONS = (
    Opt("--port", int, None, "127.0.0.1 port for sshd (default: a free one)"),
    Opt("--rebuild", bool, False, "Reinstall the root's venv with this host's runtime versions (after they "
        "changed)"),
    json_flag("Print host, port, cpu... as JSON"),
)


@command(device_app, "emulate", _EMULATE_OPTIONS)
def emulate_cmd(
    target: Annotated[str, typer.Argument(metavar="rpi4|rpi5", help="Board: rpi4 (QEMU_CPU "
                                          "cortex-a72) or rpi5 (cortex-a76)")],
    port: int | None, rebuild: bool, json_out: bool,
) -> None:
    """Build or reuse the arm64 root under $XDG_CACHE_HOME/hmff-edge/device (first time:
    debootstrap, a few minutes and ~550 MB), start its sshd on 127.0.0.1 with a key made
    here, check that XNNPACK starts inside, and print the --host to give bench. Needs root
    and the Debian packages qemu-user-static, binfmt-support and debootstrap."""
    from hmff_edge.device import emulate

    info = emulate(target, port=port, rebuild=rebuild)
    if json_out:
        print_json(info.to_dict())
        return
    typer.echo(f"{info.board} emulated ({info.label}) at {info.host}")
    typer.echo(f"  bench: {info.bench_hint()}")
    typer.echo(f"  ssh:   {info.ssh_hint()}")
    typer.echo("  stop:  hmff-edge device stop")
    typer.echo(info.host)


@command(device_app, "stop", [json_flag("Print what was done as JSON")])
def stop_cmd(json_out: bool) -> None:
    """Stop the emulated device's sshd and every process in its root, and undo its mounts.
    The cached root stays for the next 'device emulate'."""
    from hmff_edge.device import stop

    report = stop()
    if json_out:
        print_json(report.to_dict())
    elif not report.was_running and not report.unmounted and not report.killed:
        typer.echo("no emulated device was running")
    else:
        typer.echo(f"stopped {report.target or 'a leftover emulator'}: ended "
                   f"{len(report.killed)} process(es), unmounted {len(report.unmounted)}")


@command(device_app, "status", [json_flag("Print the status as JSON")])
def status_cmd(json_out: bool) -> None:
    """What emulated device runs (host, port, CPU), and whether the cached root is built."""
    from hmff_edge.device import status

    st = status()
    if json_out:
        print_json(st.to_dict())
        return
    if st.running and st.info:
        typer.echo(f"running: {st.info.target} ({st.info.label}) at {st.info.host}, sshd pid "
                   f"{st.info.pid}, since {st.info.started}")
    else:
        typer.echo("no emulated device is running")
    pins = ", ".join(f"{k} {v}" for k, v in (st.root_pins or {}).items())
    typer.echo(f"cache: {st.cache} (root {'built: ' + pins if st.root_built else 'not built'})")
    for p in st.problems:
        typer.echo(f"problem: {p}")
    if st.problems:
        raise typer.Exit(1)
