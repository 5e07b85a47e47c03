"""The CLI frame: --help stays TensorFlow-free, models --json through Typer's CliRunner."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from hmff_edge.cli import app

runner = CliRunner()


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [["--help"], ["models", "--help"], ["export", "--help"],
                                  ["train", "--help"], ["serve", "--help"], ["bench", "--help"]])
def test_help_does_not_import_tensorflow(argv):
    code = ("import sys\nfrom hmff_edge.cli import app\n"
            f"try:\n    app({argv!r}, standalone_mode=False)\nexcept SystemExit:\n    pass")
    mods = _modules_after(code)
    assert "tensorflow" not in mods and "keras" not in mods


EXPECTED_COMMANDS = {"models", "train", "evaluate", "qat", "export", "predict", "serve", "bench",
                     "device"}


def _help_commands(output: str) -> set[str]:
    """The names in the 'Commands:' section of a help text (first word of each row)."""
    section = output.split("Commands:", 1)[1].split("\n\n", 1)[0]
    return {line.split()[0] for line in section.splitlines() if line.strip()}


def test_console_help_lists_every_command():
    import typer.main

    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert _help_commands(result.output) == EXPECTED_COMMANDS
    registered = set(typer.main.get_command(app).list_commands(None))  # type: ignore[arg-type]
    assert registered == EXPECTED_COMMANDS
    bench = runner.invoke(app, ["bench", "--help"])
    assert _help_commands(bench.output) == {"run", "compare"}


def test_help_shows_the_exit_code_table():
    from hmff_edge.errors import EXIT_CODES

    out = runner.invoke(app, ["--help"]).output
    for code, text in EXIT_CODES.items():
        assert f"{int(code):>4}  {text}" in out


def test_bench_without_a_sub_command_runs_the_measurement():
    r = runner.invoke(app, ["bench", "no-such-model"])
    assert r.exit_code == 2 and "neither an existing file nor a variant name" in r.output


@pytest.mark.tf
def test_models_json():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows][:2] == ["mobilenet-v1", "kmobilenet-16ch"]
    assert len(rows) == 9
    for r in rows:
        assert {"name", "params", "macs", "paper_params", "paper_macs"} <= set(r)
    k16 = next(r for r in rows if r["name"] == "kmobilenet-16ch")
    assert k16["params"] == 244_298 and k16["paper_params"] == 244_000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["models", "resnet-50"], "valid names: mobilenet-v1"),
        (["models", "--img-size", "16"], "minimum is 32"),
        (["models", "--classes", "1"], "at least 2"),
    ],
)
def test_models_bad_input(argv, message):
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert message in result.output


def test_tensorflow_env_defaults_turn_onednn_on_for_linux_x86_only_when_unset():
    from hmff_edge._lazy import tensorflow_env_defaults

    env: dict[str, str] = {}
    tensorflow_env_defaults(env, system="Linux", machine="x86_64")
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "1" and env["KERAS_BACKEND"] == "tensorflow"
    explicit = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    tensorflow_env_defaults(explicit, system="Linux", machine="x86_64")
    assert explicit["TF_ENABLE_ONEDNN_OPTS"] == "0"
    for system, machine in (("Linux", "aarch64"), ("Darwin", "x86_64")):
        other: dict[str, str] = {}
        tensorflow_env_defaults(other, system=system, machine=machine)
        assert "TF_ENABLE_ONEDNN_OPTS" not in other
