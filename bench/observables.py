"""Posterior observables on the grokking run: a worked example, and the cost of the BIF.

    python bench/observables.py [--quick] [--no-write]

1. Trains the modular-addition MLP (REFERENCE §5, p = 53, train fraction 0.5)
   and keeps a checkpoint after memorisation (train acc ≥ 0.95, test acc low)
   and one after grokking.
2. At each: the Bayesian influence of every training example on 256 test
   examples (``slt.bayesian_influence``), the susceptibility of each layer
   (embed, left, right, out: φ_C = the training loss with only that layer
   moved) to shifting the training distribution towards the test split and towards each half of the
   training set (pairs with a + b < p and with a + b ≥ p, where the sum wraps around)
   (``slt.susceptibilities``), and the
   Bayes quartet with WAIC (``slt.bayes_quartet``). Figures go to docs/img/,
   tables into docs/observables.md.
3. Cost: a BIF run against a plain LLC run of the same length, side by side in
   this process (steady state, compiled programs cached), for observe_every
   ∈ {1, 5, 10}. Target: ≤ 2× the plain run.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import slt  # noqa: E402
from bench.common import DOCS, machine_line, markdown_table, write_section  # noqa: E402

warnings.simplefilter("ignore", slt.SLTWarning)
PAGE = "observables.md"
LLC = dict(step_size=3e-3, nbeta=2.0, localization=5.0, batch_size=128)  # the grokking demo's protocol (REFERENCE §5)


def train_run(quick: bool):
    """(task, {label: (step, params)}, history) of one grokking run."""
    from slt.models.modular import make_modular_task
    from slt.models.train import train

    task = make_modular_task("mlp", seed=0)
    steps = 12_000 if quick else 20_000
    checkpoints = list(range(0, steps + 1, 500))
    res = train(task.params, task.loss_fn, task.train_data, optimizer=task.optimizer, num_steps=steps, batch_size=128,
                checkpoint_steps=checkpoints, eval_fn=task.eval_fn, seed=0)
    hist = {h["step"]: h for h in res.history}
    memorised = next(s for s in res.steps if hist[s]["train_acc"] >= 0.95)
    grokked = next((s for s in res.steps if hist[s]["test_acc"] >= 0.95), res.steps[-1])
    by_step = dict(res.checkpoints)
    final = res.steps[-1]
    return task, {"memorised": (memorised, by_step[memorised]), "grokked": (final, by_step[final])}, hist, grokked


RELATIONS = ("same answer", "shares an operand", "neither")


def relations(train_x: np.ndarray, test_x: np.ndarray, p: int = 53) -> np.ndarray:
    """[n_train, n_query] category of each (training, test) pair: 0 same answer (a+b ≡ a'+b' mod p),
    1 shares an operand, 2 neither."""
    same = (train_x.sum(1)[:, None] % p) == (test_x.sum(1)[None, :] % p)
    shares = ((train_x[:, None, :, None] == test_x[None, :, None, :]).any(axis=(2, 3)))
    return np.where(same, 0, np.where(shares, 1, 2))


def relation_means(inf, rel: np.ndarray) -> list[tuple[float, float]]:
    """(mean BIF, its standard error from the chains' spread) per relation."""
    out = []
    for k in range(len(RELATIONS)):
        per = np.array([c[rel == k].mean() for c in inf.per_chain])
        out.append((float(inf.values[rel == k].mean()), float(per.std(ddof=1) / np.sqrt(len(per)))))
    return out


def influence_figure(means: dict, path: Path) -> None:
    """Mean BIF of (training, test) pairs by how they are related, per checkpoint."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6), constrained_layout=True)
    ax = fig.subplots()
    x = np.arange(len(RELATIONS))
    width = 0.8 / len(means)
    for i, (label, (step, rows)) in enumerate(means.items()):
        ax.bar(x + (i - (len(means) - 1) / 2) * width, [m for m, _ in rows], width, yerr=[e for _, e in rows],
               capsize=3, label=f"{label} (step {step})")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, RELATIONS)
    ax.set_ylabel("mean BIF = -Cov(ℓ_train, ℓ_test)")
    ax.set_title("Which training examples influence a test example (a + b mod 53), grokking MLP", fontsize="medium")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def susceptibility_figure(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6), constrained_layout=True)
    ax = fig.subplots()
    labels = list(results)
    first = next(iter(results.values()))[1]
    x = np.arange(len(first.observables))
    width = 0.8 / (2 * len(labels))
    k = 0
    for label, (step, s) in results.items():
        for j, probe in enumerate(s.probes):
            ax.bar(x + (k - len(labels) + 0.5) * width, s.values[:, j], width, yerr=s.stderr[:, j], capsize=2,
                   label=f"{label} (step {step}), towards {probe}")
            k += 1
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, first.observables)
    ax.set_ylabel("χ = -nβ·Cov(φ_layer, L_probe - L_train)")
    ax.legend(fontsize="x-small")
    ax.set_title("Susceptibility of each layer to shifts of the data", fontsize="medium")
    fig.savefig(path, dpi=110)


def cost_table(task, params, test, num_draws: int) -> tuple[str, list]:
    """BIF vs plain LLC of the same length, steady state, same process (both compiled before timing)."""
    kwargs = dict(**LLC, num_chains=4, num_draws=num_draws, seed=1, progress=False)

    def plain():
        return slt.estimate_llc(task.loss_fn, params, task.train_data, acceptance_checks=0, **kwargs).timing

    def bif(every):
        return slt.bayesian_influence(task.loss_fn, params, task.train_data, test, observe_every=every,
                                      acceptance_checks=0, **kwargs).llc.timing

    rows, ratios = [], []
    base = None
    for name, fn in [("plain LLC", plain)] + [(f"BIF, observe_every={k}", (lambda k=k: bif(k))) for k in (1, 5, 10)]:
        fn()  # compile
        seconds = min(fn()["sample_seconds"] for _ in range(3))
        base = seconds if base is None else base
        rows.append([name, f"{seconds:.3f}", f"{seconds / base:.2f}×"])
        ratios.append(seconds / base)
    return markdown_table(["run (4 chains × %d draws, batch 128)" % num_draws, "sampling s (best of 3)", "vs plain"],
                          rows), ratios


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    task, points, hist, grokked = train_run(args.quick)
    test = jax.tree.map(lambda x: x[:256], task.test_data)
    wraps = np.asarray(task.train_data["x"]).sum(axis=1) >= 53  # (a + b) mod p wraps around
    probes = {"test": test, "train, a+b<p": jax.tree.map(lambda x: x[~wraps], task.train_data),
              "train, a+b≥p": jax.tree.map(lambda x: x[wraps], task.train_data)}
    draws = 500 if args.quick else 1000
    sampling = dict(**LLC, num_chains=4, num_draws=draws, num_burnin=500, progress=False)
    influence, chi, quartets = {}, {}, {}
    for label, (step, params) in points.items():
        influence[label] = (step, slt.bayesian_influence(task.loss_fn, params, task.train_data, test, observe_every=5,
                                                         **sampling))
        chi[label] = (step, slt.susceptibilities(task.loss_fn, params, task.train_data, probes,
                                                 components="layers", observe_every=5, **sampling))
        quartets[label] = (step, slt.bayes_quartet(task.loss_fn, params, task.train_data, test, loo=False,
                                                   observe_every=5, **{**sampling, "nbeta": None,
                                                                       "step_size": "auto", "num_burnin": "auto"}))
        print(label, step, "done", flush=True)
    img = DOCS / "img"
    img.mkdir(exist_ok=True)
    rel = relations(np.asarray(task.train_data["x"]), np.asarray(test["x"]))
    by_relation = {label: (step, relation_means(inf, rel)) for label, (step, inf) in influence.items()}
    influence_figure(by_relation, img / "grokking_bif.png")
    susceptibility_figure(chi, img / "grokking_susceptibility.png")

    rows = []
    for label, (step, inf) in influence.items():
        strongest = np.abs(inf.values).max(axis=0)
        z = np.abs(inf.values) / np.maximum(inf.stderr, 1e-12)
        h = hist[step]
        rows.append([label, step, f"{h['train_acc']:.2f} / {h['test_acc']:.2f}", f"{np.median(strongest):.3g}",
                     f"{np.mean(z > 3):.1%}", f"{inf.llc.llc_mean:.1f}"])
        rows[-1] += [f"{m:+.3g} ± {e:.2g}" for m, e in by_relation[label][1]]
    bif_table = markdown_table(["checkpoint", "step", "train / test acc", "median over queries of max |BIF|",
                                "entries > 3 se", "λ̂ (same run)"] + [f"mean BIF, {r}" for r in RELATIONS], rows)
    rows = []
    for label, (step, s) in chi.items():
        for i, name in enumerate(s.observables):
            rows.append([label, name] + [f"{s.values[i, j]:+.3g} ± {s.stderr[i, j]:.2g}" for j in range(len(s.probes))])
    chi_table = markdown_table(["checkpoint", "layer"] + [f"χ towards {p}" for p in probes], rows)
    rows = []
    for label, (step, q) in quartets.items():
        rows.append([label, step] + [f"{getattr(q, k):.4g} ± {q.stderr[k]:.1g}" for k in
                                     ("bayes_train", "gibbs_train", "bayes_test", "gibbs_test", "waic")])
    quartet_table = markdown_table(["checkpoint", "step", "Bayes train", "Gibbs train", "Bayes test", "Gibbs test", "WAIC"],
                                   rows)
    cost, ratios = cost_table(task, points["grokked"][1], test, draws)
    text = "\n".join([
        machine_line() + f"; `python bench/observables.py{' --quick' if args.quick else ''}` "
        f"({time.perf_counter() - t0:.0f} s). Grokking MLP seed 0: train acc ≥ 0.95 at step {points['memorised'][0]}, "
        f"test acc ≥ 0.95 at step {grokked}. SGLD ε = 3e-3, nβ = 2, γ = 5, batch 128 (the demo's protocol), "
        f"4 chains × {draws} draws after 500 burn-in, observed every 5 steps.", "",
        "![BIF](img/grokking_bif.png)", "", bif_table, "",
        "![susceptibilities](img/grokking_susceptibility.png)", "", chi_table, "",
        "Bayes quartet (the local posterior at β = 1, γ = 5; nβ = n needs its own step: `step_size=\"auto\"` and "
        "automatic burn-in):", "", quartet_table, "",
        f"**Cost of the BIF** against a plain LLC run of the same length (256 queries, all 1404 training examples "
        f"per observation; target ≤ 2×; met with observe_every ≥ "
        f"{next((k for k, r in zip((1, 5, 10), ratios[1:]) if r <= 2.0), 'none')}):", "", cost,
    ])
    print(text)
    if not args.no_write:
        print("wrote", write_section(PAGE, "grokking", text))


if __name__ == "__main__":
    main()
