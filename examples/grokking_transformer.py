"""Grokking with Nanda et al.'s one-layer transformer, with the LLC along training.

Nanda et al. (arXiv 2301.05217): p = 113, train fraction 0.3, full batch,
AdamW lr 1e-3, weight decay 1.0, betas (0.9, 0.98); one layer, 4 heads,
d_model 128, d_mlp 512, ReLU, no LayerNorm. Train loss is ≈ 0 by ~1k
epochs; test loss falls sharply around 13k–14.5k epochs.

    python examples/grokking_transformer.py [--out examples/out] [--epochs 20000] [--p 113]

This is the long example: the faithful run (p = 113, 20k full-batch epochs)
takes about an hour on 2 CPU cores (measured throughput is printed at the
start; a GPU takes minutes). ``--quick`` (p = 23, train fraction 0.5, 3k
epochs) runs in a few minutes and shows memorisation, not necessarily
grokking. Saves grokking_transformer.png and the trajectory store.
"""

import argparse
import os
import time

import numpy as np

import slt
from slt.models.modular import make_modular_task
from slt.models.train import log_steps, train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="examples/out")
    parser.add_argument("--p", type=int, default=113)
    parser.add_argument("--train-frac", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=20_000)
    parser.add_argument("--checkpoints", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="p = 23, train fraction 0.5, 3000 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.p, args.train_frac, args.epochs, args.checkpoints = 23, 0.5, 3000, 20
    os.makedirs(args.out, exist_ok=True)

    task = make_modular_task("transformer", p=args.p, train_frac=args.train_frac, seed=args.seed)
    n = len(task.train_data["y"])
    print(f"transformer p={args.p}: {task.meta['num_params']} params, {n} training pairs (full batch)")
    start = time.perf_counter()
    run = train(task.params, task.loss_fn, task.train_data, optimizer=task.optimizer, num_steps=args.epochs,
                batch_size=None, checkpoint_steps=log_steps(args.epochs, args.checkpoints), eval_fn=task.eval_fn,
                seed=args.seed, verbose=True)
    print(f"trained {args.epochs} epochs in {time.perf_counter() - start:.0f} s")

    metrics = {s: h for s, h in zip(run.steps, run.history)}
    traj = slt.llc_trajectory(task.loss_fn, run.checkpoints, task.train_data,
                              out=os.path.join(args.out, "grokking_transformer.jsonl"),
                              step_size=1e-4, nbeta=n / np.log(n), localization=100.0, batch_size=min(n, 512),
                              num_chains=4, num_draws=300, metrics=metrics)
    later = np.asarray(traj.steps) > 0  # log-step axis: leave out step 0
    steps = np.asarray(traj.steps)[later]
    test_acc = np.array([metrics[s]["test_acc"] for s in steps])
    test_loss = np.array([metrics[s]["test_loss"] for s in steps])
    transitions = slt.detect_transitions(steps, {"llc": traj.llc_mean[later], "test_loss": test_loss},
                                         stds={"llc": traj.llc_sem[later]})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_llc, ax_acc) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    traj.plot(ax=ax_llc, log_x=True, transitions=transitions)
    ax_acc.plot(steps, [metrics[s]["train_acc"] for s in steps], label="train acc")
    ax_acc.plot(steps, test_acc, label="test acc")
    ax_acc.set_xscale("log")
    ax_acc.set_xlabel("epoch")
    ax_acc.legend()
    fig.suptitle(f"Transformer, p = {args.p}, train fraction {args.train_frac}")
    fig.tight_layout()
    path = os.path.join(args.out, "grokking_transformer.png")
    fig.savefig(path, dpi=120)
    print(traj.table())
    print(f"saved {path}")
    return traj


if __name__ == "__main__":
    main()
