"""Tests for slt.transitions (fast: the whole file runs in a few seconds)."""

import json

import numpy as np
import pytest

from slt.transitions import (
    Transition,
    detect_transitions,
    plot_transitions,
    smooth,
    stage_boundaries,
)


def logistic(u, c, w):
    return 1.0 / (1.0 + np.exp(-(u - c) / w))


def grid(n=60, lo=10.0, hi=1e5):
    steps = np.geomspace(lo, hi, n)
    u = (np.log(steps) - np.log(lo)) / np.log(hi / lo)
    return steps, u


def u_of(step, lo=10.0, hi=1e5):
    return (np.log(step) - np.log(lo)) / np.log(hi / lo)


def events(ts):
    return [t for t in ts if t.kind != "stage_boundary"]


@pytest.mark.parametrize("sign", [1, -1])
def test_single_step_found_with_direction_and_location(sign):
    rng = np.random.default_rng(0)
    steps, u = grid(60)
    y = 10 + sign * 8 * logistic(u, 0.42, 0.02) + rng.normal(0, 1, u.size)
    ts = detect_transitions(steps, y)
    assert len(ts) == 1
    t = ts[0]
    assert t.kind == ("rise" if sign > 0 else "fall") and t.direction == sign
    assert abs(u_of(t.step) - 0.42) < 0.02
    assert t.start < t.step < t.end
    # 10-90 % window of a logistic of scale 0.02 spans ~0.09 of the range
    assert 0.03 < u_of(t.end) - u_of(t.start) < 0.2
    assert abs(t.magnitude - sign * 8) < 1.5
    assert t.score > 8
    assert t.signals == ("value",)


def test_rise_then_fall_with_boundary_between():
    rng = np.random.default_rng(1)
    steps, u = grid(50)
    clean = 5 + 40 * logistic(u, 0.3, 0.02) - 20 * logistic(u, 0.7, 0.02)
    y = clean + rng.normal(0, 2, u.size)
    ts = detect_transitions(steps, y, stds=np.full(u.size, 2.0))
    ev = events(ts)
    assert [t.kind for t in ev] == ["rise", "fall"]
    assert abs(u_of(ev[0].step) - 0.3) < 0.03 and abs(u_of(ev[1].step) - 0.7) < 0.03
    assert abs(ev[0].magnitude - 40) < 5 and abs(ev[1].magnitude + 20) < 5
    bd = [t for t in ts if t.kind == "stage_boundary"]
    assert len(bd) == 1 and bd[0].direction == -1  # a maximum of the curve
    assert ev[0].end <= bd[0].step <= ev[1].start
    assert [t.step for t in ts] == sorted(t.step for t in ts)


@pytest.mark.slow
@pytest.mark.parametrize("with_stds", [False, True])
def test_pure_noise_gives_nothing(with_stds):
    steps, u = grid(60)
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        sd = np.full(u.size, 1.5)
        y = 3 + rng.normal(0, 1.5, u.size)
        ts = detect_transitions(steps, y, stds=sd if with_stds else None)
        assert ts == [], (seed, [t.describe() for t in ts])


def test_stds_suppress_noise_only_events():
    # a block of 8 checkpoints lifted by 6 -- but those checkpoints carry sd 5:
    # given the stds it is noise (z ~ 3.4), without them it looks like a bump.
    rng = np.random.default_rng(3)
    steps, u = grid(60)
    sd = np.full(u.size, 0.3)
    sd[26:34] = 5.0
    y = rng.normal(0, 0.3, u.size)
    y[26:34] += 6.0
    assert len(events(detect_transitions(steps, y))) >= 1
    assert detect_transitions(steps, y, stds=sd) == []


def test_uneven_spacing():
    rng = np.random.default_rng(4)
    u = np.sort(np.concatenate([[0.0, 1.0], rng.uniform(0, 1, 78)]))
    steps = 10 * 1e4**u
    y = 2 - 3 * logistic(u, 0.62, 0.015) + rng.normal(0, 0.4, u.size)
    ts = detect_transitions(steps, y)
    assert len(ts) == 1 and ts[0].direction == -1
    assert abs(u_of(ts[0].step) - 0.62) < 0.02


def test_linear_steps_and_log_steps_false():
    rng = np.random.default_rng(5)
    steps = np.arange(0, 4000, 50.0)  # includes step 0
    y = 1 + 4 * logistic(steps, 2500.0, 60.0) + rng.normal(0, 0.4, steps.size)
    ts = detect_transitions(steps, y, log_steps=False)
    assert len(ts) == 1 and ts[0].kind == "rise"
    assert abs(ts[0].step - 2500) < 0.02 * 4000


def test_multi_signal_grouping():
    rng = np.random.default_rng(6)
    steps, u = grid(60)
    llc = 30 - 12 * logistic(u, 0.60, 0.02) + rng.normal(0, 1, u.size)
    test_loss = 2.0 - 1.8 * logistic(u, 0.63, 0.02) + rng.normal(0, 0.05, u.size)
    train_loss = 2.0 - 1.9 * logistic(u, 0.2, 0.02) + rng.normal(0, 0.05, u.size)
    ts = detect_transitions(steps, {"llc": llc, "test_loss": test_loss, "train_loss": train_loss},
                            boundaries=False)
    assert len(ts) == 2
    early, late = ts
    assert early.signals == ("train_loss",) and early.kind == "fall"
    assert late.signals == ("llc", "test_loss")
    assert late.kind == "fall" and abs(u_of(late.step) - 0.60) < 0.03  # lead = llc
    assert [m.signals[0] for m in late.members] == ["llc", "test_loss"]
    assert all(m.direction == -1 for m in late.members)
    assert late.start <= min(m.start for m in late.members)
    assert "with test_loss down" in late.describe()


def test_stage_boundaries_rise_plateau_fall_and_rise_plateau_rise():
    rng = np.random.default_rng(7)
    steps, u = grid(80)
    y = 5 + 20 * logistic(u, 0.25, 0.02) - 10 * logistic(u, 0.75, 0.02) + rng.normal(0, 1, u.size)
    bd = stage_boundaries(steps, y)
    assert len(bd) == 1 and bd[0].kind == "stage_boundary" and bd[0].direction == -1
    assert 0.3 < u_of(bd[0].step) < 0.7  # on the plateau between the moves
    # two rises separated by a plateau: two events, a plateau boundary (direction 0)
    y2 = 5 + 10 * logistic(u, 0.25, 0.02) + 10 * logistic(u, 0.7, 0.02) + rng.normal(0, 1, u.size)
    ts = detect_transitions(steps, y2)
    assert [t.kind for t in ts] == ["rise", "stage_boundary", "rise"]
    assert ts[1].direction == 0 and 0.35 < u_of(ts[1].step) < 0.6
    assert abs(ts[1].magnitude) < 2  # flat


@pytest.mark.parametrize("log_steps", [True, False])
def test_noise_free_accuracies_and_a_wide_gap(log_steps):
    # step 1, then every 500: in log step a gap of 60 % of the range, where a GP
    # with a short length scale rings; accuracies are exact up to 1/1404
    steps = np.concatenate([[1.0], np.arange(500.0, 20001.0, 500.0)])
    train_acc = np.minimum(1.0, np.round((0.02 + logistic(steps, 1500.0, 300.0)) * 1404) / 1404)
    test_acc = np.round((0.02 + 0.97 * logistic(steps, 9000.0, 700.0)) * 1404) / 1404
    ts = detect_transitions(steps, {"train_acc": train_acc, "test_acc": test_acc},
                            log_steps=log_steps)
    assert [(t.kind, t.signals) for t in ts] == [("rise", ("train_acc",)), ("rise", ("test_acc",))]
    assert 1000 < ts[0].step < 2200 and 8000 < ts[1].step < 10000
    assert ts[0].magnitude == pytest.approx(0.98, abs=0.03)


def test_grokking_like_llc_three_seeds():
    for seed in range(3):
        rng = np.random.default_rng(20 + seed)
        steps, u = grid(30, 100, 1e5)
        sd = rng.uniform(1, 3, u.size)
        clean = 5 + 40 * logistic(u, 0.35, 0.03) - 20 * logistic(u, 0.7, 0.03)
        y = clean + rng.normal(0, 1, u.size) * sd
        ev = events(detect_transitions(steps, y, stds=sd))
        assert [t.kind for t in ev] == ["rise", "fall"], seed


def test_score_is_a_snr_comparable_across_scales():
    rng = np.random.default_rng(8)
    steps, u = grid(60)
    y = 4 * logistic(u, 0.5, 0.02) + rng.normal(0, 1, u.size)
    a = detect_transitions(steps, y)
    b = detect_transitions(steps, 1000 * y + 7)
    assert len(a) == len(b) == 1
    assert a[0].score == pytest.approx(b[0].score, rel=1e-3)
    assert b[0].magnitude == pytest.approx(1000 * a[0].magnitude, rel=1e-3)


def test_to_dict_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(9)
    steps, u = grid(40)
    y = 5 + 10 * logistic(u, 0.3, 0.02) - 6 * logistic(u, 0.7, 0.02) + rng.normal(0, 0.5, u.size)
    ts = detect_transitions(steps, y)
    d = json.loads(json.dumps([t.to_dict() for t in ts]))
    assert [x["kind"] for x in d] == ["rise", "stage_boundary", "fall"]
    keys = {"step", "start", "end", "direction", "magnitude", "score", "kind", "signals"}
    assert set(d[0]) >= keys
    fig, ax = plt.subplots()
    ax.set_xscale("log")
    ax.plot(steps, y)
    artists = plot_transitions(ax, ts)
    assert len(artists) == 9  # span + line + label for each
    assert len(plot_transitions(ax, ts, kinds={"rise"}, label=False)) == 2
    plt.close(fig)
    sm = smooth(steps, y)
    assert sm["mean"].shape == sm["step"].shape == (256,)
    assert np.all(sm["sd"] > 0)


def test_transition_is_frozen_and_validates_kind():
    t = Transition(1.0, 0.5, 2.0, 1, 3.0, 9.0, "rise")
    with pytest.raises(Exception):
        t.step = 2.0
    with pytest.raises(ValueError):
        Transition(1.0, 0.5, 2.0, 1, 3.0, 9.0, "jump")


def test_bad_inputs():
    steps = np.geomspace(1, 100, 10)
    y = np.zeros(10)
    with pytest.raises(ValueError, match="one value per checkpoint"):
        detect_transitions(steps, y[:9])
    with pytest.raises(ValueError, match="at least 5"):
        detect_transitions(steps[:4], y[:4])
    with pytest.raises(ValueError, match="strictly increasing"):
        detect_transitions(steps[::-1], y)
    with pytest.raises(ValueError, match="positive steps"):
        detect_transitions(np.arange(10.0), y)
    bad = y.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN.*drop those checkpoints"):
        detect_transitions(steps, bad)
    with pytest.raises(ValueError, match="non-negative"):
        detect_transitions(steps, y, stds=-np.ones(10))
    with pytest.raises(ValueError, match="not in values"):
        detect_transitions(steps, {"a": y}, stds={"b": y})
    with pytest.raises(ValueError, match="must be a dict"):
        detect_transitions(steps, {"a": y}, stds=np.ones(10))
    with pytest.raises(ValueError, match="1-D"):
        detect_transitions(steps, np.zeros((10, 2)))
    with pytest.raises(ValueError, match="kernel"):
        detect_transitions(steps, y, kernel="cubic")
    with pytest.raises(ValueError, match="positive"):
        detect_transitions(steps, y, threshold=0)
    assert detect_transitions(steps, np.full(10, 3.0)) == []  # constant: nothing, no error


# TMS-like trajectory: the LLC rises in two steps (merged into one compound rise)
# while the train loss has a second, separate fall during the LLC's second step
_TMS_STEPS = np.array([
    1, 2, 3, 4, 5, 7, 10, 13, 19, 26, 35, 49, 68, 94, 130, 179, 248, 343, 474, 656, 907, 1255,
    1736, 2401, 3320, 4592, 6351, 8784, 12150, 16804, 23241, 32144, 44458, 61489, 85044, 117622,
    162681, 225000], dtype=float)
_TMS_LLC = np.array([
    -7.76, -7.724, -7.687, -7.655, -7.62, -7.565, -7.466, -7.397, -7.259, -7.096, -6.954, -6.695,
    -6.42, -6.174, -5.91, -5.621, -5.304, -4.905, -4.441, -3.758, -2.848, -1.55, 0.2987, 2.291,
    3.605, 4.138, 4.396, 4.679, 5.159, 7.047, 7.992, 7.999, 7.998, 7.999, 7.999, 7.999, 7.998,
    7.999])
_TMS_LLC_SD = np.r_[np.full(22, 0.71), [0.48, 0.46, 0.47, 0.47, 0.47, 0.5, 0.81, 0.71, 0.55, 0.54,
                                        0.54, 0.54, 0.54, 0.54, 0.54, 0.54]]


def test_comoving_signal_joins_event_of_another():
    rng = np.random.default_rng(0)
    x = np.log(_TMS_STEPS)
    loss = (0.21 - 0.11 * logistic(x, np.log(900.0), 0.4)
            - 0.0313 * logistic(x, np.log(15225.0), 0.15))
    loss = loss * np.exp(rng.normal(0, 0.004, x.size))
    ts = detect_transitions(_TMS_STEPS, {"llc": _TMS_LLC, "train_loss": np.log(loss)},
                            stds={"llc": _TMS_LLC_SD})
    ev = events(ts)
    late = [t for t in ev if t.signals[0] == "train_loss" and 1e4 < t.step < 3e4]
    assert len(late) == 1
    t = late[0]
    assert t.kind == "fall" and t.direction == -1  # the lead is unchanged
    assert t.signals == ("train_loss", "llc")
    m = t.members[1]
    assert m.signals == ("llc",) and m.comoving and m.kind == "rise" and m.direction == 1
    assert m.magnitude > 0 and m.score >= 5.0
    assert (m.start, m.end, m.step) == (t.start, t.end, t.step)
    assert not t.members[0].comoving
    assert "llc up (co-moving)" in t.describe()
    assert t.to_dict()["members"][1]["comoving"] is True
    # the compound LLC rise is still reported with llc as lead
    assert any(e.signals[0] == "llc" and e.kind == "rise" for e in ev)


@pytest.mark.slow
def test_flat_noisy_signal_is_not_comoving():
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        steps, u = grid(60)
        a = 10 + 8 * logistic(u, 0.5, 0.02) + rng.normal(0, 1, u.size)
        b = 5 + rng.normal(0, 1, u.size)
        for stds in (None, {"b": np.ones(u.size)}):
            ts = detect_transitions(steps, {"a": a, "b": b}, stds=stds)
            ev = events(ts)
            assert len(ev) == 1 and ev[0].signals == ("a",)
            assert not any(m.comoving for m in ev[0].members)


# The quick grokking demo (seed 0, `slt demo grokking --quick`), as the demo passes it to the detector
# (log losses, linear steps, the LLC's standard errors): the LLC rises to a peak at ~3000 while the train
# accuracy rises (~650) and falls from ~7300, ahead of the test loss (~9900) and test accuracy (~9000).
_GROK_STEPS = np.array([0, 250, 500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 11000,
                        12000, 13000, 14000, 16000, 18000, 20000], float)
_GROK = {
    "llc": [15.29, 20.62, 27.12, 34.94, 40.86, 45.56, 48.72, 50.08, 49.36, 46.32, 42.3, 38.27, 34.09, 30.53, 27.58,
            25.84, 25.17, 24.86, 24.7, 24.47, 24.36, 24.36],
    "train_loss": np.log([4.027, 2.975, 2.175, 1.282, 0.7345, 0.3755, 0.1881, 0.1103, 0.06116, 0.04661, 0.03893,
                          0.03261, 0.02738, 0.02285, 0.0196, 0.01715, 0.01561, 0.01438, 0.01382, 0.01311, 0.01296,
                          0.01299]),
    "test_loss": np.log([4.013, 5.532, 7.172, 9.666, 11.78, 13.81, 15.3, 16.04, 15.47, 13.2, 10.26, 7.189, 4.299, 1.924,
                         0.7741, 0.3213, 0.1871, 0.1217, 0.1, 0.04967, 0.04889, 0.04889]),
    "train_acc": [0.01496, 0.2087, 0.416, 0.6823, 0.8511, 0.9679, 0.9957, 0.9993, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                  1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    "test_acc": [0.01851, 0.002847, 0.005694, 0.01068, 0.01566, 0.02633, 0.02989, 0.03488, 0.04199, 0.05338, 0.07544,
                 0.1338, 0.2512, 0.4932, 0.7609, 0.9075, 0.9609, 0.9836, 0.9886, 1.0, 1.0, 1.0],
}
_GROK_SEM = [0.6233, 0.6968, 0.7287, 0.6251, 0.6783, 0.6766, 0.6532, 0.6263, 0.6164, 0.5336, 0.5131, 0.3601, 0.2994,
             0.3927, 0.3061, 0.3197, 0.4653, 0.4891, 0.4209, 0.3297, 0.2687, 0.2488]


def _grouped_change_points_are_close(ts, tol):
    """Every member with a change point of its own lies within tol of the lead's step."""
    for t in ts:
        own = [m for m in t.members if not m.comoving]
        assert own and own[0].signals[0] == t.signals[0] and own[0].step == t.step
        for m in own:
            assert abs(m.step - t.step) <= tol, (t.describe(), m.signals, m.step)


def test_grouping_uses_change_points_not_overlapping_windows():
    # a broad LLC rise at u = 0.3 (10-90 % window ~[0.12, 0.48]) and a sharp test-loss fall at u = 0.45 whose
    # window overlaps it: two events, not one (their change points are 0.15 of the range apart; tolerance 0.05)
    rng = np.random.default_rng(7)
    steps, u = grid(80)
    llc = 10 + 30 * logistic(u, 0.3, 0.08) + rng.normal(0, 0.5, u.size)
    test_loss = 1.0 - 2.0 * logistic(u, 0.45, 0.015) + rng.normal(0, 0.02, u.size)
    ts = events(detect_transitions(steps, {"llc": llc, "test_loss": test_loss}, group_tol=0.05))
    span = np.log(steps[-1] / steps[0])
    for t in ts:
        own = [m for m in t.members if not m.comoving]
        for m in own:
            assert abs(np.log(m.step / t.step)) <= 0.05 * span, (t.describe(), m.signals)
    rise = [t for t in ts if t.signals[0] == "llc" and t.kind == "rise"]
    fall = [t for t in ts if t.kind == "fall" and "test_loss" in [m.signals[0] for m in t.members if not m.comoving]]
    assert len(rise) == 1 and len(fall) == 1 and rise[0] is not fall[0]
    assert abs(u_of(rise[0].step) - 0.3) < 0.05 and abs(u_of(fall[0].step) - 0.45) < 0.03
    # the test loss moves inside the LLC's window with a change point of its own elsewhere: not co-moving
    assert "test_loss" not in rise[0].signals


def test_grokking_demo_events_do_not_join_distant_change_points():
    ts = detect_transitions(_GROK_STEPS, {k: np.asarray(v, float) for k, v in _GROK.items()},
                            stds={"llc": np.asarray(_GROK_SEM)}, log_steps=False)
    ev = events(ts)
    _grouped_change_points_are_close(ts, 0.05 * 20000)
    llc_fall = [t for t in ev if t.signals[0] == "llc" and t.kind == "fall"]
    assert len(llc_fall) == 1
    fall = llc_fall[0]
    assert 6000 < fall.step < 8500
    # the train accuracy rose at ~650 and the test accuracy at ~9000: neither is part of the LLC fall
    assert "train_acc" not in fall.signals and "test_acc" not in fall.signals
    assert "train_acc" not in fall.describe() and "test_acc" not in fall.describe()
    llc_rise = [t for t in ev if t.signals[0] == "llc" and t.kind == "rise"]
    assert len(llc_rise) == 1 and llc_rise[0].step < 2000
    # the test accuracy's rise and the test loss's fall (~9000-9900) are one event of their own
    late = [t for t in ev if {"test_acc", "test_loss"} <= set(t.signals) and t.step > 8000]
    assert len(late) == 1 and "llc" not in late[0].signals


def test_plot_legend_names_each_band_and_line():
    from matplotlib.figure import Figure

    from slt.plotting import plot_grokking
    from slt.transitions import LEGEND

    ts = detect_transitions(_GROK_STEPS, {k: np.asarray(v, float) for k, v in _GROK.items()},
                            stds={"llc": np.asarray(_GROK_SEM)}, log_steps=False)
    ax = Figure().subplots()
    ax.plot(_GROK_STEPS, _GROK["llc"], label="LLC")
    plot_transitions(ax, ts)
    labels = ax.get_legend_handles_labels()[1]
    kinds = {t.kind for t in ts}
    assert kinds == {"rise", "fall", "stage_boundary"}
    assert sorted(labels) == sorted(["LLC"] + [LEGEND[k] for k in kinds])  # each kind once, saying what it is
    assert all("50 %" in LEGEND[k] and "10–90 %" in LEGEND[k] for k in ("rise", "fall"))
    metrics = {"train_loss": np.exp(_GROK["train_loss"]), "test_loss": np.exp(_GROK["test_loss"]),
               "train_acc": _GROK["train_acc"], "test_acc": _GROK["test_acc"]}
    fig = plot_grokking(_GROK_STEPS, _GROK["llc"], _GROK_SEM, metrics, transitions=ts, grokking_step=12000,
                        memorization_step=2000)
    llc_panel, acc_panel, loss_panel = fig.axes
    for ax in fig.axes:
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(x.startswith(("rise at", "fall at")) for x in texts), texts
    acc_texts = [t.get_text() for t in acc_panel.get_legend().get_texts()]
    assert {"train acc ≥ 0.95", "test acc ≥ 0.95", LEGEND["rise"]} <= set(acc_texts)
    # the transition lines are not drawn in the colours of the train/test curves
    colors = {tuple(line.get_color()) if not isinstance(line.get_color(), str) else line.get_color()
              for line in acc_panel.get_lines() if line.get_linestyle() == "--"}
    assert colors and not colors & {"tab:green", "tab:red"}
