"""Option tables (hmff_edge.cli._options): each flag reaches the config field its row names,
given flags are told from defaults, and a table that does not fit its command is refused
when the module is imported, not when a user runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from hmff_edge.cli import app
from hmff_edge.cli._options import Opt, config_fields, json_flag, options
from hmff_edge.errors import ConfigError

runner = CliRunner()


def test_rows_are_named_after_their_long_flag_unless_told():
    assert Opt("--max-batch", int, 1, "h").name == "max_batch"
    assert Opt("--out -o", Path, None, "h").flags == ("--out", "-o")
    renamed = Opt("--format -f", str, None, "h", name="fmt", field="formats")
    assert (renamed.name, renamed.field) == ("fmt", "formats")
    assert Opt("--seed", int, 0, "h").field == "seed"
    assert json_flag("h").field is None
    rows = (Opt("--seed", int, 0, "h"), Opt("--poll", float, None, "h", field="poll_s"),
            json_flag("h"))
    assert config_fields(rows, {"seed": 3, "poll": 2.0, "json_out": True}) == {"seed": 3,
                                                                               "poll_s": 2.0}


def test_a_table_that_does_not_fit_the_command_is_refused():
    rows = (Opt("--seed", int, 0, "h"),)

    def misspelt(sed: int) -> None: ...

    with pytest.raises(TypeError, match="'sed' is not in the option table"):
        options(rows)(misspelt)

    def no_rest(ctx: typer.Context) -> None: ...

    with pytest.raises(TypeError, match="no \\*\\*kwargs for \\['seed'\\]"):
        options(rows)(no_rest)
    with pytest.raises(TypeError, match="names a parameter twice"):
        options(rows + rows)


def test_table_rows_follow_the_leading_arguments_in_table_order():
    def cmd(src: Annotated[str, typer.Argument()], quiet: bool, **rest: object) -> None: ...

    options((Opt("--seed", int, 0, "h"), Opt("--quiet", bool, False, "h")))(cmd)
    import inspect

    sig = inspect.signature(cmd)
    assert list(sig.parameters) == ["src", "seed", "quiet"]
    assert sig.parameters["seed"].default == 0


def test_serve_flags_reach_their_serve_config_fields(monkeypatch, tmp_path):
    import hmff_edge.serve as serve

    seen = {}

    def fake_serve(model, **kw):
        seen.update(kw)

    monkeypatch.setattr(serve, "serve", fake_serve)
    res = runner.invoke(app, ["serve", str(tmp_path), "--port", "9001", "--max-batch", "4",
                              "--header-timeout", "3", "--poll", "2", "--versions", "all",
                              "--api-key", "k"])
    assert res.exit_code == 0, res.output
    cfg = seen["config"]
    assert (cfg.max_batch, cfg.header_timeout_s, cfg.poll_s, cfg.api_key) == (4, 3.0, 2.0, "k")
    assert (cfg.body_timeout_s, cfg.max_queue) == (30.0, 64)  # not given: the defaults
    assert cfg.policy.kind == "all" and seen["port"] == 9001


def test_export_flags_win_over_the_recipe_and_the_rest_keep_their_defaults(monkeypatch, tmp_path):
    import hmff_edge.convert as convert

    seen = {}

    def fake_export(source, opts):
        seen["opts"] = opts
        raise ConfigError("stop here")

    monkeypatch.setattr(convert, "export", fake_export)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[export]\nformats = "onnx"\nopset = 13\ncalib_samples = 50\n')
    res = runner.invoke(app, ["export", "src.keras", "--recipe", str(recipe), "--opset", "15",
                              "--img-size", "96", "--no-verify", "--no-qat", "--json"])
    assert res.exit_code == 2 and "stop here" in res.output
    o = seen["opts"]
    assert (o.formats, o.opset, o.calib_samples, o.img_size) == ("onnx", 15, 50, 96)
    assert (o.verify, o.qat, o.progress, o.verify_samples, o.out) == (False, False, False, 200,
                                                                      None)


def test_bench_run_flags_reach_bench_options(monkeypatch, tmp_path):
    import hmff_edge.bench as bench

    seen = {}

    def fake_bench(models, opts, progress):
        seen.update(models=models, opts=opts, progress=progress)
        raise ConfigError("stop here")

    monkeypatch.setattr(bench, "bench", fake_bench)
    res = runner.invoke(app, ["bench", "m.tflite", "--runs", "7", "--ssh-option", "A=1",
                              "--ssh-option", "B=2", "--cache", str(tmp_path), "-t", "2",
                              "--no-progress"])
    assert res.exit_code == 2 and "stop here" in res.output
    o = seen["opts"]
    assert (o.runs, o.threads, o.ssh_options, o.cache) == (7, 2, ("A=1", "B=2"), str(tmp_path))
    assert (o.device, o.warmup, seen["progress"], seen["models"]) == ("cpu", 5, False,
                                                                      ["m.tflite"])


def test_qat_flags_reach_the_qat_config(monkeypatch, tmp_path):
    import hmff_edge.quant.finetune as finetune

    seen = {}

    def fake_read(run):
        raise ConfigError("stop here")

    monkeypatch.setattr(finetune, "read_run_config", fake_read)
    monkeypatch.setattr(finetune, "QATConfig", _recording(finetune.QATConfig, seen))
    res = runner.invoke(app, ["qat", str(tmp_path), "--out", str(tmp_path / "q"), "--images", "64",
                              "--lr", "0.01", "--data", "digits", "--quiet"])
    assert res.exit_code == 2 and "stop here" in res.output
    c = seen["cfg"]
    assert (c.max_images, c.lr, c.data, c.epochs, c.progress) == (64, 0.01, "digits", 2, False)


def _recording(cls, seen):
    def make(**kw):
        seen["cfg"] = cls(**kw)
        return seen["cfg"]

    return make
