"""``jtconv tune``: layer syntax, measurement, wisdom written and reused."""

from __future__ import annotations

import json
import sys

import pytest

import jtconv
from jtconv.cli import main
from jtconv.commands.tune import parse_layer
from jtconv.plans import measure, wisdom


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JTCONV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(measure, "MIN_RUNS", 1)
    monkeypatch.setattr(measure, "MAX_RUNS", 1)
    wisdom.forget_wisdom()
    measure.forget_measurements()
    yield
    wisdom.forget_wisdom()
    measure.forget_measurements()


def test_layer_syntax():
    assert parse_layer("x=2,8,16 w=8,4,4 stride=2 padding=1 groups=1 dtype=bfloat16") == dict(
        x=(2, 8, 16), w=(8, 4, 4), stride=2, padding=1, groups=1, dtype="bfloat16"
    )
    assert parse_layer("x=1,2,3,3 w=2,2,3,3 stride=1,2")["stride"] == (1, 2)
    for bad, message in [("x=1,2,3", "needs w"), ("x=1,2,3 w=2,2,3 speed=9", "unknown"), ("x", "key=value")]:
        with pytest.raises(ValueError, match=message):
            parse_layer(bad)


def test_tune_measures_writes_wisdom_and_reuses_it(capsys, tmp_path, monkeypatch):
    layer = "x=2,8,16 w=8,4,4 stride=2 padding=1"
    assert main(["tune", "--json", "--layer", layer]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["layer"]["kernel"] == [4] and result["plan"].startswith("forward=")
    assert set(result["times_s"]) == {"forward", "input_transpose", "weight_transpose"}
    assert result["plan"] in result["rematch_s"] and isinstance(result["forward_race_s"], dict)
    assert result["from_wisdom"] is False  # ties depend on this machine's timings: only their races are known
    assert {tie.split(":")[0] for tie in result["ties"]} <= {"forward", "fwd+bwd", "rematch"}
    assert len(list((tmp_path / "cache" / "wisdom-v2").glob("*.json"))) == 1
    measure.forget_measurements()
    monkeypatch.setitem(sys.modules, "rich.console", None)  # without rich: progress as lines on stderr
    assert main(["tune", "--layer", layer]) == 0
    out, err = capsys.readouterr()
    assert err == "measuring: 1/1\n"
    assert f"layer 1d 8→4 k[4] s[2] batch 2 float32  (from wisdom, measured in {result['measure_s']:.1f} s)\n" in out
    assert f"  chosen:   {result['plan']}\n  estimate: {result['estimate']}\n" in out
    assert "from wisdom: measured by an earlier run (--forget measures again)" in out


def test_tune_errors_exit_2(capsys, tmp_path):
    assert main(["tune"]) == 2
    assert main(["tune", "--layer", "x=1,4,5 w=3,2,3"]) == 2  # channels mismatch
    assert "error" in capsys.readouterr().err
    bad = tmp_path / "layers.json"
    bad.write_text('{"x": 1}')
    assert main(["tune", "--layers", str(bad)]) == 2


def test_tune_prints_every_candidate_for_a_file_and_a_model(capsys, tmp_path, monkeypatch):
    layers = tmp_path / "layers.json"
    layers.write_text(json.dumps([{"x": [1, 4, 6], "w": [4, 2, 3], "stride": 2}]))
    (tmp_path / "tune_model.py").write_text(
        "import jax.numpy as jnp\n"
        "import jtconv\n\n"
        "def example():\n"
        "    return jtconv.conv_transpose(jnp.ones((2, 3, 4, 4)), jnp.ones((3, 2, 2, 2)), stride=2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["tune", "--forget", "--layers", str(layers), "--model", "tune_model:example"]) == 0
    out = capsys.readouterr().out
    assert out.count("\nlayer ") + out.startswith("layer ") == 2  # the file's layer and the model's
    assert "layer 1d 4→2 k[3] s[2] batch 1 float32" in out and "layer 2d 3→2 k[2, 2] s[2, 2] batch 2" in out
    for role in ("forward", "input_transpose", "weight_transpose"):
        assert f"  {role}" in out
    assert out.count("  chosen:   forward=") == 2 and out.count("  estimate: forward=") == 2
    assert "  rematch " in out and f"wisdom: {tmp_path / 'cache'}" in out
    assert main(["tune", "--model", "tune_model"]) == 2
    assert "MODULE:FUNCTION" in capsys.readouterr().err


def test_tune_prints_the_forward_race_where_there_was_one(capsys):
    from jtconv.commands.tune import _print_measurement
    from jtconv.lowering.plan import Plan

    key = measure.layer_key(jtconv.make_geometry((2, 8, 16), (8, 4, 4), stride=2, padding=1), 2, "float32", "cpu")
    plan, estimate = Plan("phase", "gemm", "gemm"), Plan("matmul", "gemm", "gemm")
    times = {"forward": {"matmul": 0.002, "phase": 0.001}, "input_transpose": {}, "weight_transpose": {}}
    race = {"matmul": 0.0021, "phase": 0.0012}
    _print_measurement(measure.Measurement(key, times, {}, plan, estimate, 1.0, forward_race=race))
    out = capsys.readouterr().out
    assert "  forward race      matmul 2.100 ms, phase 1.200 ms\n" in out
    assert "  chosen:   forward=phase" in out and "  estimate: forward=matmul" in out
    _print_measurement(measure.Measurement(key, times, {}, estimate, estimate, 1.0))
    assert "forward race" not in capsys.readouterr().out


def test_tune_says_when_the_estimate_won_a_race_as_a_tie(capsys):
    from jtconv.commands.tune import _print_measurement, _ties
    from jtconv.lowering.plan import Plan

    key = measure.layer_key(jtconv.make_geometry((2, 8, 16), (8, 4, 4), stride=2, padding=1), 2, "float32", "cpu")
    estimate, other = Plan("matmul", "gemm", "gemm"), Plan("phase", "gemm", "gemm")
    other_dx = estimate.replace(input_transpose="tiled")

    def ties(forward, plan=estimate, forward_race=None, training=None, rematch=None):
        times = {"forward": forward, "input_transpose": {}, "weight_transpose": {}}
        return _ties(measure.Measurement(key, times, {}, plan, estimate, 1.0, training, rematch, forward_race))

    tie = "within the 10% that counts as a tie, so the estimate's was kept"
    assert ties({"matmul": 0.0020, "phase": 0.0019}) == [
        f"forward: phase ran 5.0% faster than the estimate's matmul, {tie}"
    ]
    assert ties({"matmul": 0.0020, "phase": 0.0021, "tiled": None}) == []  # the estimate's was the fastest
    assert ties({"matmul": 0.0020, "phase": 0.0017}, plan=other) == []  # faster by more than the tie: replaced
    # The interleaved race decides the forward where there was one.
    assert ties({"matmul": 0.0020, "phase": 0.0010}, forward_race={"matmul": 0.0020, "phase": 0.00185}) == [
        f"forward: phase ran 7.5% faster than the estimate's matmul, {tie}"
    ]
    training = {str(estimate): 0.010, str(other_dx): 0.0096}
    rematch = {str(estimate): 0.010, str(estimate.replace(waits=not estimate.waits)): 0.0099}
    assert ties({"matmul": 0.002}, training=training, rematch=rematch) == [
        f"fwd+bwd: dx=tiled ran 4.0% faster than the estimate's dx=gemm, {tie}",
        f"rematch: waits=yes ran 1.0% faster than the estimate's waits=no, {tie}",
    ]
    assert ties({"matmul": 0.002}, plan=other_dx, training=training) == []  # the estimate's plan was not kept
    times = {"forward": {"matmul": 0.0020, "phase": 0.0019}, "input_transpose": {}, "weight_transpose": {}}
    _print_measurement(measure.Measurement(key, times, {}, estimate, estimate, 1.0))
    assert f"  estimate: {estimate}\n  tie:      forward: phase ran 5.0% faster" in capsys.readouterr().out
