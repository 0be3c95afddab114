"""slt.calibrate: the step size it picks on a potential whose answers are known in closed form.

U(w) = nβ·c·‖w‖² + γ/2·‖w‖² (d = 10): the SGLD update w ← (1 - εa/2)·w + √ε·ξ, a = 2nβc + γ,
is stable iff ε < 4/a; its stationary law is N(0, 1/(a(1 - εa/4))) (tests/exact.py), so the
step-size bias of λ̂ at ε is exactly 1/(1 - εa/4) - 1; and the MALA acceptance of its proposals is
computed here independently with numpy. The exact λ̂ target is t·E[c‖w‖²] = d·t·c/a (t = nβ).
"""

import functools
import json
import subprocess
import sys
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import slt
from slt.calibration import Calibration, calibrate
from slt.cli import main
from slt.task import load_task
from tests.exact import quadratic

D, C, N = 10, 1.0, 1000
DATA = jnp.zeros((N, 1))
TASKS = str(Path(__file__).with_name("tasks_for_cli.py"))
Z_TOL = 4.0


def quad_loss(w, batch):
    return C * jnp.sum(w**2) + 0.0 * jnp.sum(batch)


def gaussian_mala_acceptance(ea: float, d: int, samples: int = 40_000) -> float:
    """E[min(1, π(w')q(w|w')/(π(w)q(w'|w)))] for SGLD on N(0, I/a) in d dims at its stationary law (units a = 1)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((samples, d)) / np.sqrt(1 - ea / 4)
    w1 = (1 - ea / 2) * w + np.sqrt(ea) * rng.standard_normal((samples, d))
    log_q = lambda to, frm: -np.sum((to - (1 - ea / 2) * frm) ** 2, 1) / (2 * ea)
    log_alpha = 0.5 * np.sum(w * w, 1) - 0.5 * np.sum(w1 * w1, 1) + log_q(w, w1) - log_q(w1, w)
    return float(np.mean(np.exp(np.minimum(0.0, log_alpha))))


@functools.lru_cache
def acceptance_crossing(d: int, target: float = 0.9) -> float:
    """εa at which the exact MALA acceptance of SGLD proposals falls to ``target`` (bisection in log εa)."""
    lo, hi = 1e-2, 3.9
    for _ in range(20):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if gaussian_mala_acceptance(mid, d) > target else (lo, mid)
    return float(np.sqrt(lo * hi))


@pytest.fixture(scope="module")
def auto():
    """estimate_llc with step_size="auto" on the quadratic (calibration recorded in the result)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", slt.SLTWarning)
        return slt.estimate_llc(quad_loss, jnp.zeros(D), DATA, step_size="auto", num_chains=8, num_draws=2000,
                                num_burnin=200, seed=0)


def test_auto_records_its_calibration(auto):
    cal = auto.diagnostics["calibration"]
    assert cal["step_size"] == auto.config.step_size
    assert cal["nbeta"] == pytest.approx(auto.nbeta) and cal["localization"] == auto.config.localization
    assert {"table", "choices", "warnings", "curvature", "cost", "acceptance", "llc"} <= set(cal)
    assert cal["cost"]["chain_steps"] > 0
    json.dumps(cal, allow_nan=False)  # JSON as it stands
    json.loads(json.dumps(auto.to_dict(), allow_nan=False))


def test_step_is_stable_and_acceptance_near_target(auto):
    cal = auto.diagnostics["calibration"]
    t, gamma = auto.nbeta, auto.config.localization
    a = 2 * t * C + gamma
    eps = cal["step_size"]
    # the curvature stage finds the stability limit 4 / (2nβc + γ) of this potential
    assert cal["curvature"]["stability_limit"] == pytest.approx(4 / a, rel=1e-3)
    assert 0 < eps * a < 4
    # measured acceptance at the chosen step reaches the target, and so does the exact one
    assert cal["acceptance"] >= 0.9
    assert gaussian_mala_acceptance(eps * a, D) >= 0.9
    # ... without being needlessly small: within 8× of where the exact acceptance crosses 0.9
    assert eps * a >= acceptance_crossing(D) / 8
    # the step-size bias of λ̂ it accepts (exact for this potential) is within the calibration's budget (≈ 5%)
    assert quadratic(t, np.full(D, C), gamma, sgld_step=eps) / quadratic(t, np.full(D, C), gamma) - 1 < 0.08


def test_llc_at_chosen_step_matches_exact(auto):
    exact = quadratic(auto.nbeta, np.full(D, C), auto.config.localization)
    se = max(auto.diagnostics["mcse"], auto.llc_std / np.sqrt(len(auto.llc_per_chain)))
    assert se < 0.03 * exact  # the test can fail
    budget = 2 * auto.diagnostics["calibration"]["settings"]["halving_tolerance"] * exact  # bias ≈ 2·D1 ≤ 5%
    assert abs(auto.llc_mean - exact) <= Z_TOL * se + budget, (auto.llc_mean, exact, se)


def test_acceptance_alone_would_not_do():
    """Why the halving check exists: at the acceptance crossing in 10 dimensions the bias is ≫ 5%."""
    ea = acceptance_crossing(D)
    assert 1 / (1 - ea / 4) - 1 > 0.1


@pytest.fixture(scope="module")
def gamma_sweeps():
    out = {}
    for name, gammas in {"wide": [1.0, 3000.0], "narrow": [0.5, 2.0]}.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cal = calibrate(quad_loss, jnp.zeros(D), DATA, localization=gammas, seed=1)
        out[name] = (cal, [str(w.message) for w in caught if issubclass(w.category, slt.SLTWarning)])
    return out


def test_gamma_sweep_warns_when_llc_depends_on_gamma(gamma_sweeps):
    cal, messages = gamma_sweeps["wide"]
    assert any("depends strongly on the localization" in m and "falls as γ grows" in m for m in messages)
    assert cal.localization == 1.0  # the smaller γ: the large one confines the chain
    by_gamma = {c["localization"]: c for c in cal.choices}
    t = cal.nbeta
    for g, choice in by_gamma.items():  # each γ got its own step, and a λ̂ near its exact value
        assert choice["step_size"] < 4 / (2 * t * C + g)
        assert choice["llc"] == pytest.approx(quadratic(t, np.full(D, C), g), rel=0.15)
    assert by_gamma[3000.0]["step_size"] < by_gamma[1.0]["step_size"]


def test_gamma_sweep_quiet_on_a_plateau(gamma_sweeps):
    cal, messages = gamma_sweeps["narrow"]
    assert not any("localization" in m for m in messages), messages
    assert cal.localization == 0.5 and len(cal.choices) == 2


def test_summary_table_and_plot(gamma_sweeps, tmp_path):
    cal, _ = gamma_sweeps["wide"]
    assert isinstance(cal, Calibration)
    text = cal.summary()
    assert f"step_size ε = {cal.step_size:.3g}" in text and "verify" in text
    stages = {r["stage"] for r in cal.table}
    assert {"sweep", "verify"} <= stages
    assert sum(r["chosen"] for r in cal.table) == 2  # one per γ
    assert all({"step_size", "acceptance", "llc", "healthy", "localization"} <= set(r) for r in cal.table)
    fig = cal.plot(tmp_path / "cal.png")
    assert (tmp_path / "cal.png").stat().st_size > 10_000
    assert len(fig.axes) == 2 and fig.axes[1].get_xscale() == "log"
    assert len(fig.axes[0].get_legend().get_texts()) == 2  # one line per γ


def test_cli_calibrate_writes_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "cal.json", tmp_path / "cal.png"
    rc = main(["calibrate", "--task", f"{TASKS}:quadratic_task", "--out", str(out), "--plot", str(png),
               "--nbeta", "50", "--steps", "200"])
    assert rc == 0
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["task"].endswith("quadratic_task") and record["nbeta"] == 50.0
    assert 0 < record["step_size"] < 4 / (2 * 50 * 1.0 + 1.0)  # curvature 2: stability limit 4/(2nβ + γ)
    assert f"--step-size {record['step_size']:.3g}" in printed
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize(
    "spec, words",
    [
        ("nocolon", "MODULE:FACTORY"),
        ("no_such_module_xyz:make", "cannot import module"),
        (f"{TASKS}:missing", "has no attribute"),
        (f"{TASKS}:not_a_function", "not a function"),
        (f"{TASKS}:wrong_return", "must return (loss_fn, params, data)"),
        ("nowhere/task.py:make", "no such file"),
    ],
)
def test_cli_bad_task_one_line_exit_2(spec, words, capsys):
    assert main(["calibrate", "--task", spec]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slt calibrate: error:") and words in lines[0], captured.err


SLT = Path(sys.executable).with_name("slt")  # the installed console script


@pytest.mark.skipif(not SLT.exists(), reason="the slt console script is not installed next to this Python")
def test_cli_exit_status_in_a_real_process():
    bad = subprocess.run([str(SLT), "calibrate", "--task", "nocolon"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_cli_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["calibrate", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for default in ("(default: 0.9)", "(default: n/log n)", "(default: 300)", "(default: sgld)", "(default: 1)"):
        assert default in out


def test_load_task_forms(monkeypatch):
    monkeypatch.chdir(Path(__file__).parent.parent)
    for spec in ("tests.tasks_for_cli:quadratic_task_object", f"{TASKS}:quadratic_task"):
        loss_fn, params, data = load_task(spec)
        assert callable(loss_fn) and params.shape == (3,) and data.shape == (200, 1)
