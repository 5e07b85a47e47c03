"""Graph forms of the grouped 1x1 (hmff_edge.convert.forms): the selector and its tables
(TF-free), and that every form computes what the grouped form computes."""

from __future__ import annotations

import json

import pytest

from hmff_edge.convert import forms as F
from hmff_edge.errors import ConfigError

KEY = F.LayerKey(7, 7, 256, 256, 8, True, "fp32")


def fake_timer(ms_of: dict[str, float]):
    calls = []

    def timer(key, candidates):
        calls.append(key)
        return {f: ms_of.get(f.label(key.groups), 1.0) / 1e3 for f in candidates}

    timer.calls = calls
    return timer


def test_candidates_cover_every_form_kind():
    labels = [f.label(8) for f in F.candidates(KEY)]
    assert labels == ["grouped", "regroup4", "regroup2", "dense", "dense-fold"]
    assert [f.label(4) for f in F.candidates_for(4, True)][-1] == "split"
    plain = [f.label(64) for f in F.candidates_for(64, False)]
    assert "dense-fold" not in plain and "split" not in plain  # no interleave; too many groups
    assert plain[:2] == ["grouped", "regroup32"]
    # XNNPACK delegates a SPLIT into at most 4 outputs; int8 split requantizes per group
    assert "split" not in [f.label(8) for f in F.candidates_for(8, True)]
    assert "split" not in [f.label(4) for f in F.candidates_for(4, True, "int8")]


@pytest.mark.parametrize("name", ["grouped", "regroup4", "regroup2", "dense", "dense-fold", "split"])
def test_form_names_round_trip(name):
    assert F.GroupedForm.parse(name, 8).label(8) == name
    assert F.GroupedForm.parse(name, 4).label(4) == name.replace("regroup4", "grouped")


def test_unknown_form_and_key_are_config_errors():
    with pytest.raises(ConfigError, match="regroup3"):
        F.GroupedForm.parse("regroup3", 8)
    with pytest.raises(ConfigError, match="layer key"):
        F.LayerKey.parse("7x7-nonsense")
    assert F.LayerKey.parse(KEY.text()) == KEY


def test_selector_picks_the_faster_form_from_a_fake_timer():
    timer = fake_timer({"grouped": 0.9, "dense-fold": 0.3, "split": 0.5})
    layers = {"a": KEY, "b": KEY, "c": F.LayerKey(7, 7, 256, 256, 4, False, "fp32")}
    plan = F.select(layers, "latency", timer=timer, device="test")
    got = {c.layer: (c.form, c.source) for c in plan.choices}
    assert got["a"] == ("dense-fold", "measured") and got["b"] == ("dense-fold", "measured")
    assert got["c"] == ("split", "measured")  # no interleave: dense-fold is not a candidate
    assert len(timer.calls) == 2  # one timing per distinct shape
    assert plan.layer_forms()["a"] == F.GroupedForm(1, fold_interleave=True)


def test_selector_reverses_when_the_timer_does():
    timer = fake_timer({"grouped": 0.1, "dense-fold": 0.3})
    plan = F.select({"a": KEY}, "latency", timer=timer, device="test")
    assert plan.choices[0].form == "grouped"


def test_table_wins_over_timing_and_size_keeps_grouped():
    table = {KEY.text(): {"grouped": 2.0, "regroup2": 1.0}}
    timer = fake_timer({"dense": 0.01})
    plan = F.select({"a": KEY}, "latency", table=table, timer=timer, device="test")
    assert (plan.choices[0].form, plan.choices[0].source) == ("regroup2", "table")
    assert not timer.calls
    size = F.select({"a": KEY}, "size", table=table, timer=timer)
    assert (size.choices[0].form, size.choices[0].source) == ("grouped", "size")


def test_a_plan_names_the_table_it_read(tmp_path):
    path = tmp_path / "t.json"
    F.write_table(path, "amd-avx2", {KEY.text(): {"grouped": 2.0, "regroup2": 1.0}},
                  {"cpu_model": "AMD EPYC 7B13", "date": "2026-01-02"})
    assert F.table_provenance(path) == ("forms table t.json: measured 2026-01-02 on "
                                        "AMD EPYC 7B13 (amd-avx2)")


def test_no_table_and_no_timer_falls_back_to_grouped_and_says_so():
    plan = F.select({"a": KEY}, "latency", table=None, timer=None, device="pi")
    assert (plan.choices[0].form, plan.choices[0].source) == ("grouped", "default")
    assert "no runtime to time them" in plan.notes[0] and KEY.text() in plan.notes[0]


def test_unknown_optimize_is_refused():
    with pytest.raises(ConfigError, match="latency, size.*'speed'"):
        F.select({}, "speed")
    from hmff_edge.convert import ExportOptions

    with pytest.raises(ConfigError, match="--optimize"):
        ExportOptions(formats="tflite", optimize="fast").validate()


def test_table_files_are_checked(tmp_path):
    good = tmp_path / "t.json"
    F.write_table(good, "test", {KEY.text(): {"grouped": 1.0, "dense-fold": 0.5}}, {})
    assert F.load_table(path=good) == {KEY.text(): {"grouped": 1.0, "dense-fold": 0.5}}
    with pytest.raises(ConfigError, match="does not match this model"):
        F.check_table_covers(F.load_table(path=good),
                             {"x": F.LayerKey(14, 14, 64, 64, 4, False, "fp32")}, str(good))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "layers": {KEY.text(): {"regroup3": 1.0}}}))
    with pytest.raises(ConfigError, match="regroup3"):
        F.load_table(path=bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a version-1 form table"):
        F.load_table(path=bad)
    with pytest.raises(ConfigError, match="does not exist"):
        F.load_table(path=tmp_path / "missing.json")


def test_shipped_tables_parse():
    tables = sorted(F.TABLE_DIR.glob("*.json"))
    assert tables, "the package ships at least one per-device table"
    for p in tables:
        rows = F.load_table(path=p)
        assert rows and all(min(r.values()) > 0 for r in rows.values())


def test_shipped_tables_are_named_after_the_kind_they_were_measured_on():
    """A table measured on an AVX_VNNI EPYC must not be used for one without it (the two ran
    int8 twofold apart): the file's name is the kind of the SIMD flags it records."""
    for p in sorted(F.TABLE_DIR.glob("*.json")):
        meta = json.loads(p.read_text())
        assert meta["device"] == p.stem == F.kind_of(meta["cpu_model"], meta["simd"])


@pytest.mark.parametrize("model,flags,kind", [
    ("AMD EPYC 9B14", "avx2 fma avx512f avx512_vnni avx512_bf16", "amd-avx512_vnni"),
    ("AMD EPYC", "avx2 avx512f avx512_vnni avx_vnni avx512_bf16", "amd-avx512_vnni-avx_vnni"),
    ("Intel(R) Xeon(R) Platinum 8481C", "avx2 avx512_vnni avx_vnni amx_int8", "intel-amx"),
    ("AMD EPYC 7B13", "avx2 fma", "amd-avx2"),
    ("Intel(R) Xeon(R) CPU", "sse4_2 avx", "intel-generic"),
])
def test_cpu_kind_of_flags(model, flags, kind):
    assert F.kind_of(model, flags.split()) == kind


def test_plan_round_trips_through_json():
    key4 = F.LayerKey(7, 7, 256, 256, 4, True, "fp32")
    plan = F.select({"a": key4}, "latency", timer=fake_timer({"split": 0.1}), device="d")
    back = F.FormPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back == plan and "1 x split" in back.summary()


def test_cli_refuses_an_unknown_optimize_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from hmff_edge.cli import app

    out = CliRunner().invoke(app, ["export", "hmff-mobilenet-16ch", "--format", "tflite",
                                   "--quantize", "int8", "--optimize", "fast",
                                   "--out", str(tmp_path / "x")])
    assert out.exit_code != 0
    assert "--optimize must be one of latency, size, got 'fast'" in out.output
    assert not (tmp_path / "x").exists()
