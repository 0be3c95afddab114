"""LLC along an SGD trajectory of the toy model of superposition, with the k-gon plateaus marked.

Chen et al. (arXiv 2310.06301): c = 6 features in 2 hidden dimensions; SGD
(n = 1000, batch 20, lr 0.005, 4500 epochs) passes through plateaus near
regular k-gon critical points, and the LLC (full batch, ε = 1e-3, γ = 1,
500 steps) steps up with k: λ(k-gon) = (3k - 1)/2.

    python examples/tms_trajectory.py [--out examples/out] [--quick]

About 1–2 minutes on 2 CPU cores (--quick: ~30 s). Saves tms_trajectory.png.
"""

import argparse
import os
import time

import numpy as np
import optax

import slt
from slt.models.tms import kgon_params, make_tms_task, population_loss
from slt.models.train import log_steps, train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="examples/out")
    parser.add_argument("--quick", action="store_true", help="fewer epochs and checkpoints")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    c, n, batch = 6, 1000, 20
    epochs = 600 if args.quick else 4500
    steps = epochs * (n // batch)
    task = make_tms_task(c=c, n=n, seed=args.seed, init="random")
    start = time.perf_counter()
    run = train(task.params, task.loss_fn, task.data, optimizer=optax.sgd(0.005), num_steps=steps,
                batch_size=batch, checkpoint_steps=log_steps(steps, 15 if args.quick else 40), seed=args.seed)
    print(f"trained {steps} SGD steps in {time.perf_counter() - start:.1f} s")

    traj = slt.llc_trajectory(task.loss_fn, run.checkpoints, task.data, step_size=1e-3, localization=1.0,
                              nbeta=n / np.log(n), num_chains=4, num_draws=500, num_burnin=0,
                              metrics={s: h for s, h in zip(run.steps, run.history)})
    train_loss = np.array([h["train_loss"] for h in run.history])
    later = np.asarray(traj.steps) > 0  # log-step axis: leave out step 0
    transitions = slt.detect_transitions(np.asarray(traj.steps)[later],
                                         {"llc": traj.llc_mean[later], "train_loss": train_loss[later]},
                                         stds={"llc": traj.llc_sem[later]})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_llc) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    ax_loss.plot(np.asarray(traj.steps)[later], train_loss[later], "k.-", label="train loss")
    for k, color in zip((4, 5, 6), ("tab:orange", "tab:green", "tab:purple")):
        level = float(population_loss(kgon_params(c, k)))
        ax_loss.axhline(level, ls="--", color=color, lw=1, label=f"{k}-gon loss {level:.4f}")
        ax_llc.axhline((3 * k - 1) / 2, ls="--", color=color, lw=1, label=f"{k}-gon λ = {(3 * k - 1) / 2}")
    ax_loss.set_xscale("log")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=8)
    traj.plot(ax=ax_llc, log_x=True, transitions=transitions)
    ax_llc.set_xlabel("SGD step")
    ax_llc.legend(fontsize=8)
    fig.suptitle(f"TMS c={c}: LLC along SGD (seed {args.seed})")
    fig.tight_layout()
    path = os.path.join(args.out, "tms_trajectory.png")
    fig.savefig(path, dpi=120)
    print(traj.table())
    for t in transitions:
        print(f"transition at step {t.step:.0f} ({t.kind}, {'+' if t.direction > 0 else '-'}, signals {t.signals})")
    print(f"saved {path}")
    return traj, transitions


if __name__ == "__main__":
    main()
