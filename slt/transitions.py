"""Phase-transition detection on training trajectories (LLC, losses, accuracies).

Method (details, parameters and benchmark in ``docs/transitions.md``)
--------------------------------------------------------------------
Each signal is smoothed by Gaussian-process regression against log(step)
(RBF kernel + noise: the per-checkpoint standard errors when given, else a
robust noise profile; hyperparameters by maximum marginal likelihood,
Rasmussen & Williams 2006, ch. 2, 5 and 9.4).  The posterior gives, on a grid,
the smoothed curve f, its slope g = df/dlog t and their covariances.  The slope
is cut into bumps (one per local maximum of |g|) that are merged bottom-up
until

* every piece is a *significant move*: its change Δ has
  ``|Δ| / sd(Δ) >= threshold`` (the score, a z-score), and
* two neighbouring moves the same way stay apart only if the curve is
  significantly flatter between them (a plateau).

Each piece is a ``"rise"`` or ``"fall"`` located where the smoothed curve has
done half the change, with the 10-90 % window.  The points between two moves
are stage boundaries in the sense of Hoogland et al. (arXiv 2402.02364):
critical points of the smoothed LLC (dλ̂/dlog t = 0 at a peak or trough, or a
plateau between two moves the same way).

Why a hand-rolled GP: the package has no GP dependency and the detector needs
the joint posterior of the curve *and its derivative*, which off-the-shelf
regressors do not return; it is ~60 lines of numpy/scipy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, NamedTuple, Sequence

import numpy as np
from scipy import linalg, ndimage, optimize

__all__ = [
    "Transition",
    "detect_transitions",
    "stage_boundaries",
    "smooth",
    "plot_transitions",
]

MIN_POINTS = 5
KINDS = ("rise", "fall", "stage_boundary")


# --------------------------------------------------------------------------- #
# Result type
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Transition:
    """One detected transition.

    step, start, end: best location and the window of change, in the units of the
        input steps (``start <= step <= end``).  For rise/fall the window spans
        10 %-90 % of the change; for a stage boundary it is the stretch between
        the end of the previous move and the start of the next one.
    direction: +1 rise, -1 fall.  For a stage boundary: -1 at a maximum
        (rise then fall), +1 at a minimum (fall then rise), 0 at a plateau between
        two moves in the same direction.
    magnitude: change of the smoothed signal over [start, end], signal units
        (~0 for a stage boundary).
    score: signal-to-noise ratio of the change, |Δ| / sd(Δ) under the GP
        posterior over the whole move (for a boundary: the weaker of the two
        moves it separates, or of the slope dip).  A z-score, so comparable
        across runs and signals; events need ``score >= threshold`` (default 5).
    kind: "rise", "fall" or "stage_boundary".
    signals: names of the signals that move together in this event; the first
        one (in the order given) is the lead whose step/direction/magnitude/score
        are reported.  ``members`` holds the per-signal transitions.
    value: smoothed lead signal at ``step``.
    comoving: for a member, True when the signal had no move of its own here (no
        change point inside the group's window, and the group's step inside none
        of its own windows) but its smoothed curve changes significantly across
        the group's window
        (magnitude = that change, score = |Δ| / sd(Δ), window = the group's).
    """

    step: float
    start: float
    end: float
    direction: int
    magnitude: float
    score: float
    kind: str
    signals: tuple[str, ...] = ("value",)
    value: float = float("nan")
    members: tuple["Transition", ...] = field(default=(), repr=False)
    comoving: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    def to_dict(self) -> dict:
        """JSON-serialisable fields, members included."""
        d = asdict(self)
        d["signals"] = list(self.signals)
        d["members"] = [m.to_dict() for m in self.members]
        for k in ("step", "start", "end", "magnitude", "score", "value"):
            d[k] = float(d[k])
        d["direction"] = int(d["direction"])
        return d

    def describe(self) -> str:
        """One line, e.g. ``fall of llc by -19.8 (score 14.2) at step 3.1e+03 [...]``."""
        what = {"rise": "rise", "fall": "fall", "stage_boundary": "stage boundary"}[self.kind]
        s = (
            f"{what} of {self.signals[0]} by {self.magnitude:+.4g} (score {self.score:.1f}) "
            f"at step {self.step:.4g} [{self.start:.4g}, {self.end:.4g}]"
        )
        if len(self.members) > 1:
            arrows = {1: "up", -1: "down", 0: "flat"}
            s += " with " + ", ".join(
                f"{m.signals[0]} {arrows[m.direction]}" + (" (co-moving)" if m.comoving else "")
                for m in self.members[1:]
            )
        return s


# --------------------------------------------------------------------------- #
# Input validation
# --------------------------------------------------------------------------- #
def _check_1d(name, a, n=None):
    a = np.asarray(a, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(
            f"{name} has {a.shape[0]} entries but steps has {n}; pass one value per checkpoint"
        )
    if not np.all(np.isfinite(a)):
        bad = int(np.sum(~np.isfinite(a)))
        raise ValueError(
            f"{name} has {bad} NaN/inf entries; drop those checkpoints first, "
            f"e.g. keep = np.isfinite(values); steps, values = steps[keep], values[keep]"
        )
    return a


def _check_steps(steps, log_steps):
    steps = _check_1d("steps", steps)
    if steps.shape[0] < MIN_POINTS:
        raise ValueError(
            f"need at least {MIN_POINTS} checkpoints to detect transitions, got {steps.shape[0]}"
        )
    if np.any(np.diff(steps) <= 0):
        raise ValueError(
            "steps must be strictly increasing; sort the checkpoints by step and "
            "average (or drop) repeated evaluations of the same step"
        )
    if log_steps and steps[0] <= 0:
        raise ValueError(
            "log_steps=True needs positive steps (got step "
            f"{steps[0]:g}); drop the step-0 checkpoint, shift the steps (steps + 1), "
            "or pass log_steps=False"
        )
    return steps


def _normalise_signals(steps, values, stds):
    n = steps.shape[0]
    if isinstance(values, Mapping):
        if len(values) == 0:
            raise ValueError("values is an empty dict; pass at least one signal")
        names = [str(k) for k in values]
        vals = {str(k): _check_1d(f"values[{k!r}]", v, n) for k, v in values.items()}
        if stds is None:
            sds = {}
        elif isinstance(stds, Mapping):
            unknown = set(map(str, stds)) - set(names)
            if unknown:
                raise ValueError(f"stds has signals not in values: {sorted(unknown)}")
            sds = {str(k): v for k, v in stds.items() if v is not None}
        else:
            raise ValueError("values is a dict, so stds must be a dict name -> stds (or None)")
    else:
        names = ["value"]
        vals = {"value": _check_1d("values", values, n)}
        if isinstance(stds, Mapping):
            raise ValueError("values is a single array, so stds must be an array (or None)")
        sds = {} if stds is None else {"value": stds}
    out = {}
    for k in names:
        sd = None
        if k in sds:
            sd = _check_1d(f"stds[{k!r}]" if len(names) > 1 else "stds", sds[k], n)
            if np.any(sd < 0):
                raise ValueError("stds must be non-negative standard errors")
        out[k] = (vals[k], sd)
    return names, out


# --------------------------------------------------------------------------- #
# Gaussian process with derivative posterior
# --------------------------------------------------------------------------- #
_KERNELS = ("rbf", "matern52", "matern32")


def _kernel(r, ell, kind):
    """Unit-variance stationary kernel of r = x - x'.

    Returns k, dk/dlog(ell), dk/dx (= dk/dr, cross-covariance of f'(x) and
    f(x')) and d2k/dx dx' (= -d2k/dr2, covariance of the slope)."""
    if kind == "rbf":
        q = (r / ell) ** 2
        k = np.exp(-0.5 * q)
        return k, k * q, -(r / ell**2) * k, k * (1.0 - q) / ell**2
    ar = np.abs(r) * (np.sqrt(5.0 if kind == "matern52" else 3.0) / ell)
    e = np.exp(-ar)
    a2 = ar**2
    if kind == "matern52":
        a = np.sqrt(5.0) / ell
        return ((1 + ar + a2 / 3) * e, a2 * (1 + ar) * e / 3,
                -(a**2 / 3) * r * (1 + ar) * e, (a**2 / 3) * (1 + ar - a2) * e)
    if kind == "matern32":
        a = np.sqrt(3.0) / ell
        return (1 + ar) * e, a2 * e, -(a**2) * r * e, a**2 * (1 - ar) * e
    raise ValueError(f"unknown kernel {kind!r}")


# development knobs, used by bench/transitions.py to reproduce the comparisons in docs
_NOISE_MODEL = "profile"  # or "homo": one noise level for the whole run
_PROFILE_FLOOR = 1.0  # the profile never falls below this x the global level
_MAX_FIT = 200  # hyperparameters fitted on at most this many checkpoints


def _noise_profile(y):
    """Per-point noise variance: residuals from a 5-point running median (which
    follows jumps and ramps), squared; 80 %-trimmed mean over a window of
    max(15, n/6) neighbours; never below half the global level (an
    underestimate would let the GP chase noise).  Calibrated so that white
    noise of variance s^2 gives ~s^2."""
    n = len(y)
    r2 = (y - ndimage.median_filter(y, size=5, mode="nearest")) ** 2

    def tmean(a):
        a = np.sort(a)
        return float(np.mean(a[: max(1, int(0.8 * len(a)))])) / 0.2953

    glob = max(tmean(r2), 1e-12)
    if _NOISE_MODEL == "homo":
        return np.full(n, glob)
    w = min(n, max(15, n // 6))
    lo = np.clip(np.arange(n) - w // 2, 0, n - w)
    prof = np.array([tmean(r2[i: i + w]) for i in lo])
    return np.maximum(prof, _PROFILE_FLOOR * glob)


def _neg_lml(theta, y, v0, r, mode, kind):
    """-log marginal likelihood and gradient; noise = v0 + e (mode 'add') or e * v0."""
    s2, ell, e = np.exp(theta)
    R, dR, _, _ = _kernel(r, ell, kind)
    noise = v0 + e if mode == "add" else e * v0
    K = s2 * R + np.diag(noise + 1e-9)
    try:
        c = linalg.cho_factor(K, lower=True, check_finite=False)
    except linalg.LinAlgError:
        return 1e25, np.zeros(3)
    alpha = linalg.cho_solve(c, y, check_finite=False)
    Kinv = linalg.cho_solve(c, np.eye(len(y)), check_finite=False)
    nll = 0.5 * y @ alpha + np.sum(np.log(np.diag(c[0]))) + 0.5 * len(y) * np.log(2 * np.pi)
    W = np.outer(alpha, alpha) - Kinv
    dnoise = e * np.ones_like(v0) if mode == "add" else e * v0
    g = np.array([0.5 * np.sum(W * (s2 * R)), 0.5 * np.sum(W * (s2 * dR)),
                  0.5 * np.sum(np.diag(W) * dnoise)])
    return nll, -g


@dataclass
class _Fit:
    u: np.ndarray  # grid in [0, 1]
    mu: np.ndarray  # posterior mean of f (standardised units)
    Cf: np.ndarray
    g: np.ndarray  # posterior mean of df/du
    Cg: np.ndarray
    scale: float
    offset: float
    hyper: tuple
    support: np.ndarray  # points the data pin down: within ell/2 of a checkpoint
    anchor: np.ndarray  # points that are checkpoints


def _fit_gp(u, y, sd, grid, kernel="rbf", add_checkpoints=True):
    """GP regression of standardised y on u in [0,1]; posterior of f and f' on the
    grid (merged with the checkpoints themselves when ``add_checkpoints``)."""
    offset = float(np.mean(y))
    scale = float(np.std(y))
    if scale == 0.0:
        scale = 1.0
    z = (y - offset) / scale
    r = u[:, None] - u[None, :]
    # noise variance never below (1e-3 x the signal's sd)^2: noise-free signals
    # (accuracies, smooth losses) would otherwise make K numerically singular
    if sd is not None:  # known standard errors + a fitted extra white noise
        mode, v0 = "add", (sd / scale) ** 2
        ebounds, e0 = (np.log(1e-6), np.log(10.0)), 1e-2
    else:  # robust noise profile, times a fitted factor
        mode, v0 = "mul", np.maximum(_noise_profile(z), 1e-6 / 0.3)
        ebounds, e0 = (np.log(0.3), np.log(10.0)), 1.0
    # hyperparameters by marginal likelihood on <= MAX_FIT points (every k-th: the
    # estimates are per-point quantities, so thinning only costs precision)
    k = -(-len(z) // _MAX_FIT)
    sub = np.arange(0, len(z), k)
    # ell below the checkpoint spacing would let the GP pass white noise off as signal
    ell_min = max(1.5 * float(np.median(np.diff(u[sub]))), 2e-3)
    bounds = [(np.log(1e-6), np.log(1e2)), (np.log(ell_min), np.log(2.0)), ebounds]
    args = (z[sub], v0[sub], r[np.ix_(sub, sub)], mode, kernel)
    best = None
    for ell0 in (0.03, 0.1, 0.4):
        x0 = np.array([0.0, np.log(max(ell0, ell_min * 1.01)), np.log(e0)])
        res = optimize.minimize(_neg_lml, x0, args=args, jac=True, method="L-BFGS-B", bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
    s2, ell, e = np.exp(best.x)
    noise = v0 + e if mode == "add" else e * v0
    K = s2 * _kernel(r, ell, kernel)[0] + np.diag(noise + 1e-9)
    c = linalg.cho_factor(K, lower=True, check_finite=False)
    alpha = linalg.cho_solve(c, z, check_finite=False)
    if add_checkpoints:
        grid = np.union1d(grid, u)
    R, _, Rd, _ = _kernel(grid[:, None] - u[None, :], ell, kernel)
    Ks, Kd = s2 * R, s2 * Rd
    Rgg, _, _, Rdd = _kernel(grid[:, None] - grid[None, :], ell, kernel)
    Vf = linalg.solve_triangular(c[0], Ks.T, lower=True, check_finite=False)
    Vg = linalg.solve_triangular(c[0], Kd.T, lower=True, check_finite=False)
    Cf = s2 * Rgg - Vf.T @ Vf
    Cg = s2 * Rdd - Vg.T @ Vg
    dist = np.min(np.abs(grid[:, None] - u[None, :]), axis=1)
    return _Fit(grid, Ks @ alpha, Cf, Kd @ alpha, Cg, scale, offset, (s2, ell, e),
                dist <= 0.5 * ell, dist == 0.0)


# --------------------------------------------------------------------------- #
# Segmentation of the posterior slope
# --------------------------------------------------------------------------- #
def _local_max_abs(m):
    a = np.abs(m)
    G = len(a)
    idx = []
    for i in range(G):
        left = a[i - 1] if i > 0 else -np.inf
        right = a[i + 1] if i < G - 1 else -np.inf
        if a[i] > 0 and a[i] > left and a[i] >= right:
            idx.append(i)
    return idx


class _Segmenter:
    def __init__(self, fit, threshold, dip_threshold, dip_ratio, min_fraction):
        self.f = fit
        self.thr = threshold
        self.dip_thr = dip_threshold
        self.dip_ratio = dip_ratio
        self.sdf = np.sqrt(np.clip(np.diag(fit.Cf), 1e-300, None))
        self.min_delta = min_fraction * float(np.ptp(fit.mu[fit.anchor]))
        self.G = len(fit.u)
        # where the data pin the curve down (not the middle of wide gaps, where
        # the GP reverts to its prior and rings): slope and curve used there only
        sup = np.nonzero(fit.support)[0]
        self.gs = np.where(fit.support, fit.g, 0.0)
        self.mus = np.interp(fit.u, fit.u[sup], fit.mu[sup])
        self.snap = sup[np.clip(np.searchsorted(fit.u[sup], fit.u), 0, len(sup) - 1)]

    def delta_z(self, a, b):
        Cf = self.f.Cf
        d = self.f.mu[b] - self.f.mu[a]
        var = Cf[a, a] + Cf[b, b] - 2 * Cf[a, b]
        return d, d / np.sqrt(max(var, 1e-300))

    def dip_z(self, p, s):
        Cg, m = self.f.Cg, self.f.g
        sign = np.sign(m[p])
        var = Cg[p, p] + Cg[s, s] - 2 * Cg[p, s]
        return sign * (m[p] - m[s]) / np.sqrt(max(var, 1e-300))

    def lin(self, pts):
        """Mean and sd of sum_j w_j f(u_j) for pts = [(index, w), ...]."""
        idx = np.array([i for i, _ in pts])
        w = np.array([x for _, x in pts])
        mean = float(w @ self.f.mu[idx])
        var = float(w @ self.f.Cf[np.ix_(idx, idx)] @ w)
        return mean, np.sqrt(max(var, 1e-300))

    def plateau(self, A, B, sign, pa, pb, s):
        """Is there a flat stretch between same-direction moves A and B?

        A, B = (10 %, 90 %) grid indices of the moves.  Returns (z, ok): z = how
        significantly the mean slope over the gap [A 90 %, B 10 %] is below the
        mean slopes of A and of B over their 10-90 % windows (the weaker of the
        two), ok = whether the gap slope is below dip_ratio x theirs.
        Without a gap, the same test on the pointwise slope at the split s."""
        (a1, b1), (a2, b2) = A, B
        u = self.f.u
        if a2 - b1 >= 2 and b1 > a1 and b2 > a2:
            LA, LG, LB = u[b1] - u[a1], u[a2] - u[b1], u[b2] - u[a2]
            sA, sG, sB = [(self.f.mu[j] - self.f.mu[i]) / L
                          for (i, j, L) in ((a1, b1, LA), (b1, a2, LG), (a2, b2, LB))]
            _, sdA = self.lin([(b1, 1 / LA + 1 / LG), (a1, -1 / LA), (a2, -1 / LG)])
            _, sdB = self.lin([(b2, 1 / LB), (a2, -1 / LB - 1 / LG), (b1, 1 / LG)])
            z = min(sign * (sA - sG) / sdA, sign * (sB - sG) / sdB)
            return z, sign * sG <= self.dip_ratio * min(sign * sA, sign * sB)
        m = self.f.g
        z = min(self.dip_z(pa, s), self.dip_z(pb, s))
        return z, sign * m[s] <= self.dip_ratio * min(abs(m[pa]), abs(m[pb]))

    def ends(self, a, p, b, sign):
        """Where the move through slope peak p starts and stops inside [a, b]: the
        points nearest p that are within one posterior sd of the curve's extremes
        on either side (a counter-move merged into the piece does not eat into
        the change, and noise wiggles on the plateaus do not inflate it).  Only
        checkpoints qualify: between them, and in wide gaps most of all, the
        GP is less certain (it reverts to its prior)."""
        mu, sd, ok = self.f.mu, self.sdf, self.f.anchor
        left = np.where(ok[a: p + 1], sign * mu[a: p + 1], np.inf)
        ia = np.nonzero(left <= left.min() + sd[a: p + 1])[0].max() if ok[a: p + 1].any() else p - a
        right = np.where(ok[p: b + 1], sign * mu[p: b + 1], -np.inf)
        ib = np.nonzero(right >= right.max() - sd[p: b + 1])[0].min() if ok[p: b + 1].any() else 0
        return a + int(ia), p + int(ib)

    def move(self, a, b) -> "_Move":
        """Best reading of segment [a, b] as one move (grid indices)."""
        m = self.gs
        best = None
        for sign in (1.0, -1.0):
            p = a + int(np.argmax(sign * m[a: b + 1]))
            i, j = self.ends(a, p, b, sign)
            d, z = self.delta_z(i, j)
            z *= sign
            if abs(d) < self.min_delta or i == j:
                z = min(z, 0.0)
            if best is None or z > best[3]:
                best = (i, j, d, z, p)
        i, j, d, z, p = best
        return _Move(i, j, d, z, p, *self.window(i, j))

    def window(self, a, b):
        """Grid indices (10 %, 90 %) of the change of the smoothed curve over [a, b]
        (moved to the next point the data pin down)."""
        mu = self.mus
        if b <= a or mu[b] == mu[a]:
            return a, b
        q = (mu[a: b + 1] - mu[a]) / (mu[b] - mu[a])
        i50 = int(np.argmax(q >= 0.5))
        i10 = int(np.nonzero(q[: i50 + 1] <= 0.1)[0].max(initial=0))
        hi = np.nonzero(q[i50:] >= 0.9)[0]
        i90 = i50 + (int(hi[0]) if hi.size else len(q) - 1 - i50)
        return int(self.snap[a + i10]), int(self.snap[a + i90])

    def run(self):
        """Bottom-up merging of the slope bumps.

        Returns (bounds, moves [_Move], split strengths)."""
        m = self.gs
        peaks = _local_max_abs(m)
        bounds = [0]
        for pa, pb in zip(peaks[:-1], peaks[1:]):
            bounds.append(pa + int(np.argmin(np.abs(m[pa: pb + 1]))))
        bounds.append(self.G - 1)
        moves = [self.move(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]

        def merge(i):  # segments i and i + 1
            del bounds[i + 1]
            moves[i: i + 2] = [self.move(bounds[i], bounds[i + 1])]

        while len(moves) > 1:
            zs = [mv.z for mv in moves]
            i = int(np.argmin(zs))
            if zs[i] < self.thr:  # a weak piece joins its weaker neighbour
                if i == 0 or (i < len(moves) - 1 and zs[i + 1] < zs[i - 1]):
                    merge(i)
                else:
                    merge(i - 1)
                continue
            strength = self.strengths(bounds, moves)
            j = int(np.argmin(strength))
            if strength[j] >= self.thr:
                break
            merge(j)
        return bounds, moves, self.strengths(bounds, moves)

    def strengths(self, bounds, moves):
        """How well each split between consecutive moves is supported (a z-score):
        the weaker move, and for two moves the same way the plateau between them."""
        out = []
        for i in range(len(moves) - 1):
            A, B = moves[i], moves[i + 1]
            st = min(A.z, B.z)
            if np.sign(A.delta) == np.sign(B.delta):
                dip, ok = self.plateau((A.i10, A.i90), (B.i10, B.i90), np.sign(A.delta), A.peak, B.peak, bounds[i + 1])
                st = min(st, dip * self.thr / self.dip_thr if ok else 0.0)
            out.append(st)
        return out


class _Move(NamedTuple):
    """One significant move of a smoothed signal, as grid indices."""

    start: int  # where the move starts and ends (a', b')
    end: int
    delta: float  # change of the standardized curve over [start, end]
    z: float  # its score
    peak: int  # the slope peak it passes through
    i10: int  # the 10 % and 90 % points of its change
    i90: int


def _progress_point(u, mu, a, b, frac, forward_from=None, backward_from=None):
    """Interpolated u where the curve on [a, b] has done `frac` of its change."""
    d = mu[b] - mu[a]
    p = (mu - mu[a]) / d
    if backward_from is None:
        lo = a if forward_from is None else forward_from
        for i in range(lo, b):
            if p[i] < frac <= p[i + 1]:
                t = (frac - p[i]) / (p[i + 1] - p[i])
                return u[i] + t * (u[i + 1] - u[i]), i
            if p[i] >= frac:
                return u[i], i
        return u[b], b
    for i in range(backward_from, a, -1):
        if p[i] > frac >= p[i - 1]:
            t = (p[i] - frac) / (p[i] - p[i - 1])
            return u[i] - t * (u[i] - u[i - 1]), i - 1
    return u[a], a


def _analyse_signal(steps, values, sd, name, *, log_steps, threshold, dip_threshold, dip_ratio,
                    min_fraction, min_magnitude, grid_size, kernel):
    x = np.log(steps) if log_steps else steps.astype(float)
    x0, x1 = float(x[0]), float(x[-1])
    to_u = lambda st: ((np.log(st) if log_steps else st) - x0) / (x1 - x0)  # noqa: E731  (step → [0, 1])
    to_step = (lambda q: float(np.exp(x0 + q * (x1 - x0)))) if log_steps else (
        lambda q: float(x0 + q * (x1 - x0)))
    u = (x - x0) / (x1 - x0)
    grid = np.linspace(0.0, 1.0, max(64, grid_size - len(u)))  # + the checkpoints
    if np.ptp(values) == 0.0:  # constant signal
        return [], [], None
    fit = _fit_gp(u, values, sd, grid, kernel)
    seg = _Segmenter(fit, threshold, dip_threshold, dip_ratio, min_fraction)
    bounds, moves, strength = seg.run()
    # locations are read off the smoothed curve, taken as linear across gaps
    # between checkpoints wider than the length scale (the GP rings there)
    grid, mu = fit.u, seg.mus
    val = lambda q: float(np.interp(q, grid, mu) * fit.scale + fit.offset)  # noqa: E731
    events = []
    for mv in moves:
        a, b, d, z = mv.start, mv.end, mv.delta, mv.z
        if z < threshold or abs(d) * fit.scale < min_magnitude or d == 0:
            events.append(None)
            continue
        us, i_s = _progress_point(grid, mu, a, b, 0.5)
        ustart, _ = _progress_point(grid, mu, a, b, 0.1, backward_from=i_s)
        uend, _ = _progress_point(grid, mu, a, b, 0.9, forward_from=i_s)
        events.append(
            Transition(
                step=to_step(us), start=to_step(ustart), end=to_step(uend),
                direction=int(np.sign(d)), magnitude=float(d * fit.scale), score=float(z),
                kind="rise" if d > 0 else "fall", signals=(name,), value=val(us),
            )
        )
    boundaries = []
    for i in range(len(moves) - 1):
        ea, eb = events[i], events[i + 1]
        if ea is None or eb is None:
            continue
        pa, pb = moves[i].peak, moves[i + 1].peak
        ua, ub = to_u(ea.end), to_u(eb.start)
        if ea.direction != eb.direction:  # extremum of the smoothed curve
            direction = -ea.direction
            at = grid[pa + int(np.argmax(ea.direction * mu[pa: pb + 1]))]
        else:  # middle of the plateau (or the slope minimum if the moves overlap)
            direction = 0
            if ua <= ub:
                at = 0.5 * (ua + ub)
            else:
                at = grid[pa + int(np.argmin(ea.direction * fit.g[pa: pb + 1]))]
        lo, hi = min(ua, at, ub), max(ua, at, ub)
        boundaries.append(
            Transition(
                step=to_step(at), start=to_step(lo), end=to_step(hi), direction=direction,
                magnitude=val(hi) - val(lo), score=float(strength[i]), kind="stage_boundary",
                signals=(name,), value=val(at),
            )
        )
    floor = max(min_fraction * float(np.ptp(mu)) * fit.scale, min_magnitude)

    def change(start, end):
        """Posterior change m(end) - m(start) of this signal and its sd (signal units),
        from the joint posterior of the two points (linear interpolation on the grid);
        (0, inf) when below the min_fraction / min_magnitude guard."""
        w = np.zeros(len(grid))
        for st, sgn in ((start, -1.0), (end, 1.0)):
            q = float(np.clip(to_u(st), 0.0, 1.0))
            i = int(np.clip(np.searchsorted(grid, q) - 1, 0, len(grid) - 2))
            t = (q - grid[i]) / (grid[i + 1] - grid[i])
            w[i] += sgn * (1.0 - t)
            w[i + 1] += sgn * t
        d = float(w @ fit.mu) * fit.scale
        sdd = float(np.sqrt(max(float(w @ fit.Cf @ w), 0.0))) * fit.scale
        if abs(d) < floor or abs(d) == 0.0:
            return d, np.inf
        return d, max(sdd, 1e-12 * abs(d))

    return [e for e in events if e is not None], boundaries, change


# --------------------------------------------------------------------------- #
# Grouping across signals
# --------------------------------------------------------------------------- #
def _group(per_signal, names, log_steps, group_tol, span, changes=None, threshold=np.inf):
    """Greedy grouping of per-signal transitions whose change points are close, then the co-moving signals.

    Strongest first, a transition joins the group whose members' steps (the 50 % points) all lie within
    ``group_tol`` × the (log-)step range of its own (the nearest such group; at most one transition per
    signal, rises/falls and stage boundaries apart). Overlapping windows alone never group: a broad move
    and a sharp one inside it are two events. Then a signal not in an event whose own smoothed curve
    changes significantly (|Δ| / sd(Δ) >= threshold) across the event's window joins it as co-moving,
    unless a move of its own is there (its change point inside the event's window, or the event's step
    inside its window): that move is reported as its own event.
    """
    tr = (np.log if log_steps else (lambda q: q))
    order = {n: i for i, n in enumerate(names)}
    items = sorted(
        (t for ts in per_signal.values() for t in ts),
        key=lambda t: (-t.score),
    )
    groups: list[list[Transition]] = []
    tol = group_tol * span

    def distance(t, grp):  # complete linkage: the farthest member's change point
        return max(abs(tr(t.step) - tr(o.step)) for o in grp)

    for t in items:
        cands = [
            (distance(t, g), k)
            for k, g in enumerate(groups)
            if t.signals[0] not in {o.signals[0] for o in g}
            and (t.kind == "stage_boundary") == (g[0].kind == "stage_boundary")
        ]
        cands = [c for c in cands if c[0] <= tol]
        if cands:
            groups[min(cands)[1]].append(t)
        else:
            groups.append([t])
    own_moves = {n: [t for t in ts if t.kind != "stage_boundary"] for n, ts in per_signal.items()}
    out = []
    for g in groups:
        g.sort(key=lambda t: order[t.signals[0]])
        lead = g[0]
        start, end = min(t.start for t in g), max(t.end for t in g)
        if lead.kind != "stage_boundary" and changes:
            have = {t.signals[0] for t in g}
            for n in names:
                if n in have or changes.get(n) is None:
                    continue
                if any(start <= m.step <= end or m.start <= lead.step <= m.end for m in own_moves.get(n, ())):
                    continue  # the signal's own move is here: an event of its own, not co-moving

                d, sdd = changes[n](start, end)
                if abs(d) / sdd >= threshold:
                    g.append(Transition(
                        step=lead.step, start=start, end=end, direction=int(np.sign(d)),
                        magnitude=d, score=abs(d) / sdd, kind="rise" if d > 0 else "fall",
                        signals=(n,), comoving=True,
                    ))
        out.append(
            Transition(
                step=lead.step, start=start, end=end,
                direction=lead.direction, magnitude=lead.magnitude, score=lead.score,
                kind=lead.kind, signals=tuple(t.signals[0] for t in g), value=lead.value,
                members=tuple(g),
            )
        )
    return out


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #
def detect_transitions(
    steps,
    values,
    *,
    stds=None,
    log_steps: bool = True,
    threshold: float = 5.0,
    boundaries: bool = True,
    dip_threshold: float = 3.0,
    dip_ratio: float = 0.5,
    min_fraction: float = 0.05,
    min_magnitude: float = 0.0,
    group_tol: float = 0.05,
    kernel: str = "rbf",
    grid_size: int = 256,
) -> list[Transition]:
    """Find rises, falls and stage boundaries in one or several aligned trajectories.

    Each signal is smoothed by GP regression against log step (method and
    benchmark: ``docs/transitions.md``); moves whose change has
    ``|Δ| / sd(Δ) >= threshold`` are reported, located where the smoothed curve
    has done half the change, with the 10-90 % window.

    Parameters
    ----------
    steps: checkpoint steps, strictly increasing (positive when ``log_steps``).
        Uneven spacing is fine.
    values: 1-D array, or dict name -> 1-D array of aligned signals (e.g.
        ``{"llc": ..., "test_loss": ...}``; the first is the lead signal).
        Losses usually behave better as log(loss).
    stds: per-checkpoint standard errors (array, or dict name -> array for
        some of the signals), used as known noise plus a fitted extra white
        noise.  Without them the noise level is estimated along the run.
    log_steps: smooth against log(step) (default; training dynamics are
        multiplicative in time) or against step.
    threshold: minimal score (z-score of the change) of a move.
    boundaries: also return stage boundaries between consecutive moves.
    dip_threshold, dip_ratio: two moves the same way stay separate only if the
        mean slope over the gap between them is below ``dip_ratio`` x theirs,
        with significance ``dip_threshold`` (a z-score).
    min_fraction: ignore moves smaller than this fraction of the smoothed
        signal's total range (guards noise-free signals); ``min_magnitude``
        is the same in signal units.
    group_tol: transitions of different signals are grouped when their steps
        (change points) lie within this fraction of the (log-)step range of
        each other; overlapping windows alone do not group.
    kernel: GP kernel, "rbf" (default; measured best), "matern52" or "matern32".
    grid_size: points of the evaluation grid across the step range.

    Returns
    -------
    List of :class:`Transition`, sorted by step.  With several signals,
    transitions whose change points are within ``group_tol`` are merged into
    one (``signals`` lists who moved, ``members`` the per-signal transitions;
    ``start``/``end`` span the members' windows).  A signal with no move of
    its own there (no change point of its own inside the window, and the
    event's step not inside one of its own windows) whose smoothed curve still
    changes by ``|Δ| / sd(Δ) >= threshold`` across a rise/fall's window joins
    it as a co-moving member (``comoving=True``).
    """
    steps = _check_steps(steps, log_steps)
    names, sig = _normalise_signals(steps, values, stds)
    if threshold <= 0 or dip_threshold <= 0:
        raise ValueError("threshold and dip_threshold must be positive")
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
    per_signal, changes = {}, {}
    for name in names:
        v, sd = sig[name]
        ev, bd, changes[name] = _analyse_signal(
            steps, v, sd, name, log_steps=log_steps, threshold=threshold,
            dip_threshold=dip_threshold, dip_ratio=dip_ratio,
            min_fraction=min_fraction, min_magnitude=min_magnitude, grid_size=grid_size,
            kernel=kernel,
        )
        per_signal[name] = ev + (bd if boundaries else [])
    if len(names) == 1:
        out = per_signal[names[0]]
    else:
        x = np.log(steps) if log_steps else steps
        out = _group(per_signal, names, log_steps, group_tol, float(x[-1] - x[0]),
                     changes, threshold)
    return sorted(out, key=lambda t: (t.step, t.kind))


def stage_boundaries(steps, values, stds=None, *, log_steps: bool = True, threshold: float = 5.0,
                     **kwargs) -> list[Transition]:
    """Stage boundaries à la Hoogland et al. (arXiv 2402.02364).

    GP regression of ``values`` (e.g. the LLC) against log step; boundaries are
    the critical points of the posterior mean between two significant moves:
    where dλ̂/dlog t crosses zero (peak/trough) or dips significantly to a
    plateau between two moves the same way.  Same parameters as
    :func:`detect_transitions`; ``values`` must be a single 1-D signal.
    """
    if isinstance(values, Mapping):
        raise ValueError("stage_boundaries takes one signal; call it once per signal")
    out = detect_transitions(steps, values, stds=stds, log_steps=log_steps, threshold=threshold,
                             boundaries=True, **kwargs)
    return [t for t in out if t.kind == "stage_boundary"]


def smooth(steps, values, stds=None, *, log_steps: bool = True, num: int = 256,
           kernel: str = "rbf") -> dict:
    """GP-smoothed curve used by the detector, for plotting.

    Returns a dict of arrays: ``step`` (grid, log- or linearly spaced), ``mean``
    and ``sd`` of the smoothed signal, ``slope`` and ``slope_sd`` of
    d value / d log step (or / d step when ``log_steps=False``).
    """
    steps = _check_steps(steps, log_steps)
    _, sig = _normalise_signals(steps, values, stds)
    v, sd = sig["value"]
    x = np.log(steps) if log_steps else steps
    span = float(x[-1] - x[0])
    u = (x - x[0]) / span
    grid = np.linspace(0.0, 1.0, num)
    fit = _fit_gp(u, v, sd, grid, kernel, add_checkpoints=False)
    xg = x[0] + grid * span
    return {
        "step": np.exp(xg) if log_steps else xg,
        "mean": fit.mu * fit.scale + fit.offset,
        "sd": np.sqrt(np.clip(np.diag(fit.Cf), 0, None)) * fit.scale,
        "slope": fit.g * fit.scale / span,
        "slope_sd": np.sqrt(np.clip(np.diag(fit.Cg), 0, None)) * fit.scale / span,
    }


_COLORS = {"rise": "tab:green", "fall": "tab:red", "stage_boundary": "tab:gray"}
LEGEND = {
    "rise": "rise at 50 % of its change (band: 10–90 %)",
    "fall": "fall at 50 % of its change (band: 10–90 %)",
    "stage_boundary": "stage boundary (band: between the moves)",
}


def plot_transitions(ax, transitions: Sequence[Transition], *, kinds=None, colors=None,
                     alpha: float = 0.15, label: bool = True, signals=None, legend: bool = True):
    """Draw transitions onto an existing matplotlib Axes (x axis = step).

    Shades each [start, end] window (for a rise/fall the 10-90 % window of the
    change; for a stage boundary the stretch between the moves) and draws a
    line at ``step`` (dashed: where the smoothed curve has done half of the
    change; dotted: the stage boundary); rises green, falls red, stage
    boundaries grey (override with ``colors``, a dict kind -> colour).
    ``kinds`` / ``signals`` filter what is drawn (a transition is drawn if any
    of its signals is in ``signals``).  With ``label`` a short tag (↑/↓/|, +k
    for k further signals in the event) is written at the top of the axes.
    With ``legend`` the first line of each kind carries a legend label
    (:data:`LEGEND`) that says what its line and band are; call
    ``ax.legend()`` afterwards to show it.  Returns the list of artists.
    """
    cols = dict(_COLORS, **(colors or {}))
    artists = []
    trans = ax.get_xaxis_transform()
    labelled = set(ax.get_legend_handles_labels()[1]) if legend else set()
    for t in transitions:
        if kinds is not None and t.kind not in kinds:
            continue
        if signals is not None and not set(t.signals) & set(signals):
            continue
        c = cols[t.kind]
        if t.end > t.start:
            artists.append(ax.axvspan(t.start, t.end, color=c, alpha=alpha, lw=0))
        text = LEGEND[t.kind]
        artists.append(ax.axvline(t.step, color=c, ls="--" if t.kind != "stage_boundary" else ":",
                                  lw=1.2, label=text if legend and text not in labelled else "_nolegend_"))
        labelled.add(text)
        if label:
            tag = {"rise": "↑", "fall": "↓", "stage_boundary": "|"}[t.kind]
            if len(t.signals) > 1:
                tag += "+" + str(len(t.signals) - 1)
            artists.append(ax.text(t.step, 0.98, tag, transform=trans, ha="center", va="top",
                                   color=c, fontsize=9))
    return artists
