"""Induction heads over seeds: formation by mechanism vs transitions in each head's LLC.

Runs the induction demo (``slt.induction_demo.run_induction_demo``: train, the whole model's and every
head's weight-refined LLC at every checkpoint, the detector on each) at each seed, into ``OUT/seedS``
(a finished run there is reused), and checks, per seed (``validate_report``):

* every induction head (final prefix-matching ≥ 0.5) has a flagged rise or fall of its own LLC whose
  change point lies in its prefix-matching score's 10 % → 90 % window, stretched ×/÷ 1.5 in step (slack in
  log step); every previous-token head likewise against its previous-token score;
* heads of neither role: every flag is a false alarm (counted);
* the whole-model LLC and the in-context loss have transitions whose windows overlap.

Writes three tables into docs/induction.md: formation step by mechanism vs by LLC per seed, the checks per
seed, and every head's final scores.

    python bench/induction.py                      # seeds 0 1 2, full demo settings, ~5 min per seed on 2 cores
    python bench/induction.py --quick --no-write   # the quick settings
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, markdown_table, write_section  # noqa: E402


def window(f) -> str:
    return "—" if not f or f.get("start") is None else f"{f['start']:.0f}–{f['end']:.0f}"


def flags(ts) -> str:
    return ", ".join(f"{'↑' if t['direction'] > 0 else '↓'}{t['step']:.0f}" for t in ts) or "none"


def formation_table(reports) -> str:
    header = ["seed", "head", "role", "mechanism 10–90 % (50 %)", "LLC transitions (change point)",
              "LLC window", "in window ×/÷1.5"]
    rows = []
    for r in reports:
        v = r["validation"]
        for name, c in r["components"].items():
            f = c["formation"]
            mech = "—" if not f or f.get("start") is None else f"{window(f)} ({f['mid']:.0f})"
            ok = v["heads"][name]["ok"]
            llc_w = "; ".join(f"{t['start']:.0f}–{t['end']:.0f}" for t in c["transitions"]) or "—"
            rows.append([r["seed"], name, c["role"].replace("_", "-"), mech, flags(c["transitions"]), llc_w,
                         "—" if ok is None else "yes" if ok else "**no**"])
        m, icl = r["model"]["transitions"], r["in_context_loss"]
        rows.append([r["seed"], "model", "", f"ICL fall {window(icl['fall'])} ({icl['fall']['mid']:.0f})"
                     if icl["fall"].get("mid") is not None else "—",
                     flags(m), "; ".join(f"{t['start']:.0f}–{t['end']:.0f}" for t in m) or "—",
                     "yes" if v["model_and_icl_together"] else "**no**"])
    return markdown_table(header, rows)


def checks_table(reports) -> str:
    header = ["seed", "induction heads", "prev-token heads", "induction heads hit", "prev-token heads hit",
              "false alarms (non-specialising heads)", "model LLC vs ICL change point", "total s"]
    rows = []
    for r in reports:
        v = r["validation"]
        hs = v["heads"]
        ind = [n for n, h in hs.items() if h["role"] == "induction"]
        pt = [n for n, h in hs.items() if h["role"] == "previous_token"]
        t = v["model_and_icl_together"]
        rows.append([
            r["seed"], ", ".join(ind) or "none", ", ".join(pt) or "none",
            f"{sum(bool(hs[n]['ok']) for n in ind)}/{len(ind)}", f"{sum(bool(hs[n]['ok']) for n in pt)}/{len(pt)}",
            f"{v['false_alarms']} on {v['non_specialising_heads']}",
            f"{t['llc_step']:.0f} vs {t['icl_step']:.0f} (Δlog {t['log_step_distance']:.2f})" if t else "**apart**",
            f"{r['timing']['total_seconds_first_run']:.0f}",
        ])
    return markdown_table(header, rows)


def heads_table(reports) -> str:
    names = list(reports[0]["components"])
    rows = []
    for r in reports:
        cs = r["components"]
        rows.append([r["seed"]] + [
            f"{cs[n]['prefix_matching'][-1]:.2f} / {cs[n]['previous_token'][-1]:.2f}"
            + {"induction": " **I**", "previous_token": " **P**", "none": ""}[cs[n]["role"]] for n in names])
    return markdown_table(["seed"] + names, rows)


def main(argv=None):
    from slt.induction_demo import run_induction_demo

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="the demo's quick settings")
    ap.add_argument("--out", type=Path, default=Path("bench_out/induction"))
    ap.add_argument("--fresh", action="store_true", help="delete earlier runs in OUT first")
    ap.add_argument("--no-write", action="store_true", help="do not write into docs/induction.md")
    ap.add_argument("--figure", type=int, default=None, help="copy this seed's plot to docs/img/induction_demo.png")
    args = ap.parse_args(argv)

    reports = []
    for seed in args.seeds:
        out = args.out / (("quick" if args.quick else "full") + f"_seed{seed}")
        if args.fresh and out.exists():
            shutil.rmtree(out)
        first = out / "first_run.json"
        t0 = time.perf_counter()
        r = run_induction_demo(out, quick=args.quick, seed=seed, progress=False)
        if not first.exists():  # the timing of the run that did the work (a rerun only reads the store)
            first.write_text(json.dumps({"total_seconds": time.perf_counter() - t0,
                                         "train_seconds": r["timing"]["train_seconds"],
                                         "llc_seconds": r["timing"]["llc_seconds_this_run"]}))
        r["timing"]["total_seconds_first_run"] = json.loads(first.read_text())["total_seconds"]
        reports.append(r)
        v = r["validation"]
        print(f"seed {seed}: {v['specialised_hit']}/{v['specialised']} specialised heads hit, "
              f"{v['false_alarms']} false alarms, model+ICL together: {bool(v['model_and_icl_together'])}, "
              f"{r['timing']['total_seconds_first_run']:.0f} s", file=sys.stderr, flush=True)
    ftab, ctab, htab = formation_table(reports), checks_table(reports), heads_table(reports)
    print(ctab, "", ftab, "", htab, sep="\n")
    if not args.no_write:
        mode = "quick" if args.quick else "full"
        cmd = "python bench/induction.py" + (" --quick" if args.quick else "") + \
            f" --seeds {' '.join(map(str, args.seeds))}"
        foot = f"\n\n_{machine_line()}; {mode} demo settings; `{cmd}`._"
        write_section("induction.md", "induction-checks", ctab + foot)
        write_section("induction.md", "induction-formation", ftab)
        path = write_section("induction.md", "induction-heads", htab)
        print(f"\nwrote tables into {path}", file=sys.stderr)
    if args.figure is not None:
        src = args.out / (("quick" if args.quick else "full") + f"_seed{args.figure}") / "induction.png"
        dst = Path(__file__).resolve().parent.parent / "docs" / "img" / "induction_demo.png"
        shutil.copyfile(src, dst)
        print(f"copied {src} to {dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
