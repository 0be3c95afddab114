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
