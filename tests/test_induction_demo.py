"""slt demo induction's library entry, tiny mode: the report has the keys of the issue, and a rerun resumes."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_tiny_induction_demo_report_and_resume(tmp_path):
    from slt.induction_demo import run_induction_demo

    report = run_induction_demo(tmp_path, tiny=True, progress=False)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert {"components", "induction_heads", "model", "in_context_loss", "failed"} <= set(on_disk)
    heads = on_disk["components"]
    assert len(heads) >= 2
    for name, c in heads.items():
        assert {"steps", "llc", "llc_std", "transitions", "prefix_matching", "previous_token"} <= set(c), name
        assert len(c["llc"]) == len(c["steps"]) == len(c["prefix_matching"]) == len(c["previous_token"])
        for t in c["transitions"]:
            assert {"step", "start", "end", "direction", "kind", "score"} <= set(t)
    assert set(on_disk["induction_heads"]) <= set(heads)
    assert all(heads[h]["prefix_matching"][-1] >= 0.5 for h in on_disk["induction_heads"])
    assert len(on_disk["model"]["llc"]) == len(on_disk["model"]["steps"])
    icl = on_disk["in_context_loss"]  # its Monte Carlo standard error goes to the detector with it
    assert len(icl["sem"]) == len(icl["values"]) and all(0 < s < 1 for s in icl["sem"])
    # the LLC time of the run is the whole programs' (model and heads), not one unit's share of them
    assert report["timing"]["llc_compute_seconds"] <= report["timing"]["llc_seconds_this_run"]
    assert report["timing"]["llc_compute_seconds"] > 0.35 * report["timing"]["llc_seconds_this_run"]
    assert (tmp_path / "report.md").exists() and (tmp_path / "induction.png").read_bytes()[:4] == b"\x89PNG"
    store = (tmp_path / "llc.jsonl").read_bytes()
    again = run_induction_demo(tmp_path, tiny=True, progress=False)
    assert (tmp_path / "llc.jsonl").read_bytes() == store  # resumed: nothing resampled
    assert again["model"]["llc"] == report["model"]["llc"]


def test_transitions_without_finite_standard_errors_fall_back_to_the_detectors_noise():
    """A standard error over one sequence is NaN at every checkpoint: the signal is still searched."""
    import numpy as np

    from slt.induction_demo import _transitions

    steps = np.geomspace(10, 2000, 15)
    values = np.where(steps < 200, 0.0, -3.0) + 0.01 * np.random.default_rng(0).normal(size=15)
    found = _transitions(steps, values, np.full(15, np.nan), 5.0)
    assert [t["kind"] for t in found] == ["fall"] and 100 < found[0]["step"] < 250
