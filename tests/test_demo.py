"""The grokking demo's report: per-layer LLCs, convergence, every warning per checkpoint, the two protocols."""

from __future__ import annotations

import json

import pytest

from slt.demo import PUBLISHED, SETTINGS, demo_settings, run_grokking_demo
from slt.validation import SLTInputError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    report = run_grokking_demo(out, tiny=True, progress=False, log=lambda m: None)
    return out, report


@pytest.mark.slow
def test_the_report_has_each_layer_and_every_warning(tiny):
    out, report = tiny
    saved = json.loads((out / "report.json").read_text())
    assert set(saved["components"]) == {"embedding", "hidden", "unembedding"}
    for part in saved["components"].values():
        assert len(part["llc"]) == len(saved["steps"]) and part["num_params"] > 0
    assert saved["components"]["hidden"]["num_params"] == 2 * 12 * 48 + 2 * 48  # left and right, with biases
    assert len(saved["rhat"]) == len(saved["steps"]) and 0.0 <= saved["converged_fraction"] <= 1.0
    md = (out / "report.md").read_text()
    assert "## Per layer" in md and "layers.png" in md and (out / "layers.png").read_bytes()[:4] == b"\x89PNG"
    assert "R-hat" in md and "Converged (split R-hat ≤ 1.1)" in md
    warned = saved["warnings"]
    assert warned, "the tiny demo's 40 draws should warn"
    for step, messages in warned.items():
        for m in messages:
            assert f"- step {step}: {m}" in md  # every warning of every checkpoint, in the report


def test_the_default_is_converged_and_the_published_protocol_is_labelled():
    default = SETTINGS["default"]
    assert default.step_size == "auto" and default.num_burnin == "auto" and default.num_draws >= 1000
    published = demo_settings("default", protocol="published")
    assert (published.step_size, published.num_burnin, published.num_draws) == (3e-3, 0, 500)
    assert published.protocol == "published" and PUBLISHED["protocol"] == "published"
    assert demo_settings("quick", step_size=1e-3, num_burnin=100).step_size == 1e-3
    with pytest.raises(SLTInputError, match="protocol must be one of converged, published"):
        demo_settings("default", protocol="fast")


def test_a_finished_training_is_reused_refused_with_other_settings_and_replaced_on_restart(tmp_path):
    """reuse_or_train (both demos): same settings reuse train.json, other settings are one UserError naming the
    changed keys, restart trains again and rewrites the record."""
    from types import SimpleNamespace

    from slt.commands._common import UserError
    from slt.demo import reuse_or_train

    calls = []

    def run(ckpt_dir):
        calls.append(ckpt_dir)
        return SimpleNamespace(history=[{"step": 0}], train_seconds=0.1)

    kw = dict(restart=False, log=lambda m: None, announce="training", holds="a run", hint="use another --out")
    assert reuse_or_train(str(tmp_path), {"a": 1, "b": 2}, run, **kw)[1] is True
    rec, trained = reuse_or_train(str(tmp_path), {"a": 1, "b": 2}, run, **kw)
    assert trained is False and rec["settings"] == {"a": 1, "b": 2} and len(calls) == 1
    with pytest.raises(UserError, match=r"holds a run with other training settings \(b\); use another --out"):
        reuse_or_train(str(tmp_path), {"a": 1, "b": 3}, run, **kw)
    rec, trained = reuse_or_train(str(tmp_path), {"a": 1, "b": 3}, run, **{**kw, "restart": True})
    assert trained and rec["settings"]["b"] == 3 and len(calls) == 2


def test_a_layer_value_is_shown_at_its_own_checkpoint():
    """A layer's rows are its own checkpoints: one the whole model lacks must not shift the others."""
    from slt.demo import _at_step

    layer = {"steps": [10, 20, 30], "llc": [1.0, 2.0, 3.0]}
    assert [_at_step(layer, s) for s in (10, 30, 40)] == [1.0, 3.0, None]
