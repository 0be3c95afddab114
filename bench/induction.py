"""Induction heads forming in the slt.models.induction organism, over seeds.

Trains the default organism (make_induction_task + train_induction) at each
seed and reports, per seed, when each mechanism forms: the 10 % → 90 % window
of the best induction head's prefix-matching score and of the best layer-0
previous-token head's score, the fall of the in-context loss and of the loss
on the repeat, and the pair of checkpoints between which the in-context loss
falls most; then every head's final scores. Writes both tables into
docs/induction.md.

    python bench/induction.py                  # seeds 0-4, about 2 minutes on 2 CPU cores
    python bench/induction.py --seeds 0 1 2 --no-write
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from slt.models import induction as ind

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, markdown_table, write_section  # noqa: E402


def window(f) -> str:
    """'start–end (mid)': the 10 %, 90 % and 50 % crossings."""
    return "—" if f is None or f["start"] is None else f"{f['start']:.0f}–{f['end']:.0f} ({f['mid']:.0f})"


def run_seed(seed: int, num_steps: int | None) -> dict:
    t0 = time.perf_counter()
    task = ind.make_induction_task(seed)
    result = ind.train_induction(task, num_steps=num_steps)
    wall = time.perf_counter() - t0
    s = ind.formation_summary(result.history)
    hist = ind.mechanism_history(result.history)
    steps = hist["steps"]

    def best(names, key):
        return max(names, key=lambda n: s["heads"][n][key][-1]) if names else None

    ih = best([n for n in s["induction_heads"] if n.startswith("L1")], "prefix_matching")
    pt = best([n for n in s["previous_token_heads"] if n.startswith("L0")], "previous_token")
    a, b = s["in_context_loss"]["steepest_drop"]
    icl = dict(zip(steps.tolist(), hist["in_context_loss"].tolist()))
    return {
        "seed": seed,
        "num_steps": int(steps[-1]),
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "induction_head": ih,
        "induction": s["heads"][ih]["formation"] if ih else None,
        "previous_token_head": pt,
        "previous_token": s["heads"][pt]["formation"] if pt else None,
        "repeat_loss_fall": ind.formation_step(steps, -hist["repeat_loss"]),
        "icl_fall": s["in_context_loss"]["fall"],
        "icl_drop": [a, b, icl[a], icl[b]],
        "icl_final": float(hist["in_context_loss"][-1]),
        "summary": s,
    }


def formation_table(runs) -> str:
    header = ["seed", "induction head (PM)", "PM 10–90 % (50 %)", "prev-token head (PT)", "PT 10–90 % (50 %)",
              "repeat-loss fall 10–90 % (50 %)", "ICL steepest drop", "ICL final", "train s", "total s"]
    rows = []
    for r in runs:
        ih, pt = r["induction_head"], r["previous_token_head"]
        a, b, ia, ib = r["icl_drop"]
        rows.append([
            r["seed"],
            f"{ih} ({r['induction']['final']:.2f})" if ih else "none",
            window(r["induction"]),
            f"{pt} ({r['previous_token']['final']:.2f})" if pt else "none",
            window(r["previous_token"]),
            window(r["repeat_loss_fall"]),
            f"{a}→{b}: {ia:+.2f}→{ib:+.2f}",
            f"{r['icl_final']:+.2f}",
            f"{r['train_seconds']:.1f}",
            f"{r['wall_seconds']:.1f}",
        ])
    return markdown_table(header, rows)


def heads_table(runs) -> str:
    names = list(runs[0]["summary"]["heads"])
    rows = []
    for r in runs:
        heads = r["summary"]["heads"]
        rows.append([r["seed"]] + [
            f"{heads[n]['prefix_matching'][-1]:.2f} / {heads[n]['previous_token'][-1]:.2f}"
            + {"induction": " **I**", "previous_token": " **P**", "none": ""}[heads[n]["role"]]
            for n in names
        ])
    return markdown_table(["seed"] + names, rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the task's)")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-seed results here")
    ap.add_argument("--no-write", action="store_true", help="do not write into docs/induction.md")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    runs = []
    for seed in args.seeds:
        r = run_seed(seed, args.steps)
        runs.append(r)
        print(f"seed {seed}: induction {r['induction_head']} {window(r['induction'])}, previous-token "
              f"{r['previous_token_head']} {window(r['previous_token'])}, ICL drop {r['icl_drop'][:2]}, "
              f"train {r['train_seconds']:.1f} s, total {r['wall_seconds']:.1f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - t0
    ftab, htab = formation_table(runs), heads_table(runs)
    print(ftab, "\n", htab, sep="\n")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    if not args.no_write:
        cmd = "python bench/induction.py" + (f" --steps {args.steps}" if args.steps else "")
        foot = f"\n\n_{machine_line()}; total {total:.0f} s; `{cmd}`._"
        write_section("induction.md", "induction-formation", ftab + foot)
        path = write_section("induction.md", "induction-heads", htab)
        print(f"\nwrote tables into {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
