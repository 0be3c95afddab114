"""Per-head refined LLCs of the modular-addition transformer: every head in one program, against loops.

The model is Nanda et al.'s one-layer grokking transformer
(``slt.models.modular.make_modular_task("transformer")``) at a size a 2-core
CPU trains in under a minute: p = 23, train fraction 0.7, d_model 32, 4 heads
of d_head 8, d_mlp 64 (9,888 parameters; each head frees 1,024: its rows of
W_Q, W_K, W_V and its columns of W_O). AdamW as published, full batch,
10,000 epochs: it memorises by ~300 epochs and groks (test accuracy ≈ 0.97) by
the end.

At the last checkpoint, the weight-refined LLC of each head, three ways, with
the same w*, data, ε, nβ, γ, batch size, chains and draws (SGLD, no burn-in,
one step per draw, no MALA checks):

(a) ``slt.estimate_llc_components(components="heads")``: all heads in ONE
    compiled program (heads × chains chains);
(b) a Python loop of ``slt.estimate_llc(restrict=head)``, one call per head
    (same seed, so each head's value must equal (a)'s up to float rounding);
(c) devinterp 1.3.2's way: one ``estimate_learning_coeff_with_summary`` per
    head with ``optimize_over_per_model_param`` (its restriction: the masked
    coordinates get neither drift nor noise), on a PyTorch mirror of the model
    with the same weights, in the benchmark venv (see bench/vs_devinterp.py).

Each contender runs in its own fresh process (persistent compilation cache
off), interleaved, repeated. "cold" is the whole job in that fresh process
(slt: tracing and compilation included; devinterp: torch's warm-up), "warm"
the same job again in the same process. Ratios are taken within a repeat
(side by side) and their median reported.

Then the per-head LLC over training: ``slt.llc_trajectory(components="heads")``
at checkpoints along the run, tabulated, and drawn with the speed comparison's
per-head values in docs/img/modular_heads.png.

    python bench/components.py [--repeats 2] [--write] [--bench-python /work/bench-venv/bin/python]
    python bench/components.py --render results.json --write      # only render saved results

About 6 minutes on 2 busy CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # in both environments (slt's and the devinterp benchmark venv)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import run_worker  # noqa: E402
from vs_devinterp import DEFAULT_BENCH_PYTHON, _se, _version, best_threads, fast_loader  # noqa: E402

ROOT = HERE.parent
IMG = ROOT / "docs" / "img" / "modular_heads.png"

MODEL = dict(p=23, train_frac=0.7, d_model=32, num_heads=4, d_mlp=64, seed=0)
EPOCHS = 10_000
TRAJECTORY_STEPS = (0, 30, 100, 200, 300, 500, 1000, 2000, 4000, 7000, 10_000)
SAMPLING = dict(step_size=1e-3, localization=100.0, batch_size=64, num_chains=4, num_draws=500)  # nβ = n / log n
TRAJECTORY_DRAWS = 300
TARGETS = {"loop": 3.0, "devinterp": 20.0}  # issue 21: ≥ 3× the loop of our own calls, ≥ 20× devinterp


# ----------------------------------------------------------------------------- the task (slt side)


def make_task():
    from slt.models.modular import make_modular_task

    cfg = {k: v for k, v in MODEL.items() if k not in ("p", "train_frac", "seed")}
    return make_modular_task("transformer", p=MODEL["p"], train_frac=MODEL["train_frac"], seed=MODEL["seed"], **cfg)


def train_task(epochs: int):
    from slt.models.train import train

    task = make_task()
    steps = sorted({s for s in TRAJECTORY_STEPS if s <= epochs} | {epochs})
    t0 = time.perf_counter()
    run = train(task.params, task.loss_fn, task.train_data, optimizer=task.optimizer, num_steps=epochs,
                batch_size=None, checkpoint_steps=steps, eval_fn=task.eval_fn, seed=MODEL["seed"])
    history = [{k: float(v) for k, v in h.items()} for h in run.history]
    return task, run, history, time.perf_counter() - t0


def write_spec(task, params, directory: Path, num_draws: int = SAMPLING["num_draws"]) -> Path:
    """w*, the data, every head's mask and the settings, for the three workers."""
    import slt
    from slt.components import leaf_paths, num_free

    import jax

    paths = leaf_paths(params)
    arrays = {f"param/{p}": np.asarray(x) for p, x in zip(paths, jax.tree.leaves(params))}
    arrays.update({f"data/{k}": np.asarray(v) for k, v in task.train_data.items()})
    heads = slt.heads(params)
    for name, mask in heads.items():
        arrays.update({f"mask/{name}/{p}": np.asarray(m) for p, m in zip(paths, jax.tree.leaves(mask))})
    np.savez(directory / "modular.npz", **arrays)
    n = int(len(task.train_data["y"]))
    spec = {**SAMPLING, "num_draws": num_draws, "nbeta": n / math.log(n), "n": n, "paths": paths, "heads": list(heads),
            "num_free": {k: num_free(m) for k, m in heads.items()}, "num_params": task.meta["num_params"],
            "d_head": MODEL["d_model"] // MODEL["num_heads"], "npz": str(directory / "modular.npz")}
    path = directory / "modular.json"
    path.write_text(json.dumps(spec))
    return path


def _slt_inputs(spec: dict):
    import jax

    task = make_task()
    arrays = dict(np.load(spec["npz"]))
    treedef = jax.tree.structure(task.params)
    params = jax.tree.unflatten(treedef, [arrays[f"param/{p}"] for p in spec["paths"]])
    data = {k[len("data/"):]: v for k, v in arrays.items() if k.startswith("data/")}
    masks = {h: jax.tree.unflatten(treedef, [arrays[f"mask/{h}/{p}"] for p in spec["paths"]]) for h in spec["heads"]}
    return task, params, data, masks


def _kwargs(spec: dict, seed: int) -> dict:
    return dict(step_size=spec["step_size"], nbeta=spec["nbeta"], localization=spec["localization"],
                batch_size=spec["batch_size"], num_chains=spec["num_chains"], num_draws=spec["num_draws"],
                seed=seed, progress=False, acceptance_checks=0)  # devinterp computes no MALA check either


def run_slt(spec: dict, seed: int, mode: str) -> dict:
    """(a) mode "one": all heads in one call; (b) mode "loop": one estimate_llc per head; (b') mode
    "loop_recompile": the same loop with slt's in-memory program cache emptied before every call."""
    import jax

    import slt
    import slt.sampling

    task, params, data, masks = _slt_inputs(spec)

    def job(s):
        if mode == "one":
            res = slt.estimate_llc_components(task.loss_fn, params, data, components=masks, **_kwargs(spec, s))
        else:
            res = {}
            for h, m in masks.items():
                if mode == "loop_recompile":  # what a restriction compiled into the program would cost
                    slt.sampling._compiled_cache.clear()
                    jax.clear_caches()
                res[h] = slt.estimate_llc(task.loss_fn, params, data, restrict=m, **_kwargs(spec, s))
        return res

    t0 = time.perf_counter()
    res = job(seed)
    cold = time.perf_counter() - t0
    t1 = time.perf_counter()
    job(seed + 1000)  # the compiled program cached: the steady state
    warm = time.perf_counter() - t1
    first = next(iter(res.values()))
    return {"cold_seconds": cold, "warm_seconds": warm,
            "compile_seconds": float(sum(r.timing.get("compile_seconds", 0.0) for r in res.values())),
            "num_devices": first.timing.get("num_devices", 1), "init_loss": first.init_loss,
            "llc_per_chain": {h: np.asarray(r.llc_per_chain, float).tolist() for h, r in res.items()},
            "jax": jax.__version__}


# ----------------------------------------------------------------------------- the devinterp worker (bench venv)


def torch_twin(spec: dict, arrays: dict):
    """The PyTorch mirror of slt.models.modular.ModularTransformer (one layer) with w*, and evaluate(model, batch)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            for p in spec["paths"]:
                self.register_parameter(p.replace("/", "__"), nn.Parameter(torch.from_numpy(arrays[f"param/{p}"].copy())))

        def w(self, path):
            return getattr(self, path.replace("/", "__"))

        def forward(self, x):  # x long [B, 3] ("a b =")
            a = "blocks/0/attn/"
            n_ctx = x.shape[-1]
            h = self.w("embed/W_E").T[x] + self.w("pos_embed/W_pos")[:n_ctx]
            k = torch.einsum("ihd,bpd->bihp", self.w(a + "W_K"), h)
            q = torch.einsum("ihd,bpd->bihp", self.w(a + "W_Q"), h)
            v = torch.einsum("ihd,bpd->bihp", self.w(a + "W_V"), h)
            scores = torch.einsum("bihp,bihq->bipq", k, q)  # [batch, head, key pos, query pos]
            visible = torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)).T  # key p seen by query q iff p <= q
            scores = scores.masked_fill(~visible, float("-inf")) / math.sqrt(spec["d_head"])
            attn = torch.softmax(scores, dim=-2)
            z = torch.einsum("bihp,bipq->bihq", v, attn)
            z = z.reshape(z.shape[0], -1, n_ctx).transpose(-1, -2)  # [batch, pos, heads·d_head]
            h = h + torch.einsum("df,bqf->bqd", self.w(a + "W_O"), z)
            m = "blocks/0/mlp/"
            hid = torch.relu(torch.einsum("md,bpd->bpm", self.w(m + "W_in"), h) + self.w(m + "b_in"))
            h = h + torch.einsum("dm,bpm->bpd", self.w(m + "W_out"), hid) + self.w(m + "b_out")
            return h[:, -1, :] @ self.w("unembed/W_U")

    def evaluate(model, batch):
        x, y = batch
        return F.cross_entropy(model(x.long()), y.long())

    return Twin(), evaluate


def run_devinterp(spec: dict, seed: int) -> dict:
    import warnings

    import torch
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary

    warnings.filterwarnings("ignore")
    arrays = dict(np.load(spec["npz"]))
    model, evaluate = torch_twin(spec, arrays)
    tensors = [torch.from_numpy(arrays["data/x"]), torch.from_numpy(arrays["data/y"])]
    loader = fast_loader(tensors, spec["batch_size"], seed)
    torch.set_num_threads(2)
    torch.set_num_threads(best_threads(model, evaluate, next(iter(loader))))
    masks = {h: {p.replace("/", "__"): torch.from_numpy(arrays[f"mask/{h}/{p}"]) for p in spec["paths"]}
             for h in spec["heads"]}

    def job(s):
        with torch.no_grad():
            init_loss = float(evaluate(model, tuple(tensors)))
        out = {}
        for i, (h, mask) in enumerate(masks.items()):  # one estimate per head: devinterp's only way
            res = estimate_learning_coeff_with_summary(
                model, loader, evaluate=evaluate, sampling_method=SGLD,
                optimizer_kwargs=dict(lr=spec["step_size"], nbeta=spec["nbeta"], localization=spec["localization"]),
                num_draws=spec["num_draws"], num_chains=spec["num_chains"], num_burnin_steps=0, num_steps_bw_draws=1,
                init_loss=init_loss, cores=1, seed=s + 100 * i, device="cpu", verbose=False,
                optimize_over_per_model_param=mask)
            out[h] = [float(res[f"llc-chain/{c}"]) for c in range(spec["num_chains"])]
        return init_loss, out

    t0 = time.perf_counter()
    init_loss, llcs = job(seed)
    cold = time.perf_counter() - t0
    t1 = time.perf_counter()
    job(seed + 1000)
    warm = time.perf_counter() - t1
    return {"cold_seconds": cold, "warm_seconds": warm, "compile_seconds": 0.0, "init_loss": init_loss,
            "llc_per_chain": llcs, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "devinterp": _version("devinterp")}


# ----------------------------------------------------------------------------- the driver

CONTENDERS = ("one", "loop", "loop_recompile", "devinterp")
LABELS = {
    "one": "(a) slt, all heads in one call (`estimate_llc_components`)",
    "loop": "(b) slt, a loop of `estimate_llc(restrict=head)`",
    "loop_recompile": "(b′) the same loop, compiling every call (slt's program cache emptied before each)",
    "devinterp": "(c) devinterp 1.3.2, one estimate per head (`optimize_over_per_model_param`)",
}


def _worker(python: str, contender: str, spec_path: Path, seed: int) -> dict:
    return run_worker(__file__, python, contender, spec_path, seed, cpu_devices="auto")


def trajectory(task, run, history, spec: dict, draws: int) -> dict:
    """Per-head LLC at every checkpoint: estimate_llc_components(components="heads") at each (one program, compiled
    once for all checkpoints). Not llc_trajectory(components=...), which adds the whole model: at ε = 1e-3 its
    chains diverge at the late checkpoints, where every head's are healthy."""
    import slt

    kw = {**_kwargs(spec, 0), "num_draws": draws}
    out = {"steps": [], "num_draws": draws, "heads": {h: {"mean": [], "sem": []} for h in spec["heads"]}, "warnings": {}}
    t0 = time.perf_counter()
    for step, params in run.checkpoints:
        res = slt.estimate_llc_components(task.loss_fn, params, task.train_data, components="heads", **kw)
        out["steps"].append(int(step))
        for h, r in res.items():
            out["heads"][h]["mean"].append(float(r.llc_mean))
            out["heads"][h]["sem"].append(float(r.llc_std / math.sqrt(len(r.llc_per_chain))))
            for w in r.diagnostics.get("warnings", []):
                out["warnings"].setdefault(str(step), []).append(f"{h}: {w}")
    out["wall_seconds"] = time.perf_counter() - t0
    by_step = {int(h["step"]): h for h in history}
    out["metrics"] = {k: [by_step[s][k] for s in out["steps"]] for k in ("train_loss", "test_loss", "train_acc", "test_acc")}
    return out


def summarize(spec: dict, runs: dict) -> dict:
    ratio = lambda c, key: float(np.median([r[key] / a[key] for r, a in zip(runs[c], runs["one"])]))  # noqa: E731
    med = lambda c, key: float(np.median([r[key] for r in runs[c]]))  # noqa: E731
    heads = spec["heads"]
    pooled = {c: {h: np.concatenate([r["llc_per_chain"][h] for r in runs[c]]) for h in heads} for c in CONTENDERS}
    same_seed = max(abs(a - b) for c in ("loop", "loop_recompile") for ra, rb in zip(runs["one"], runs[c])
                    for h in heads for a, b in zip(ra["llc_per_chain"][h], rb["llc_per_chain"][h]))
    rows = []
    for h in heads:
        row = {"head": h, "num_free": spec["num_free"][h]}
        for c in CONTENDERS:
            row[c], row[f"{c}_se"] = float(pooled[c][h].mean()), _se(pooled[c][h])
        row["z_devinterp"] = (row["one"] - row["devinterp"]) / math.hypot(row["one_se"], row["devinterp_se"])
        row["z_loop"] = (row["one"] - row["loop"]) / math.hypot(row["one_se"], row["loop_se"])
        rows.append(row)
    chain_steps = len(heads) * spec["num_chains"] * spec["num_draws"]
    timing = {c: {"cold": med(c, "cold_seconds"), "warm": med(c, "warm_seconds"), "compile": med(c, "compile_seconds"),
                  "cold_ratio": ratio(c, "cold_seconds"), "warm_ratio": ratio(c, "warm_seconds"),
                  "chain_steps_per_s": chain_steps / med(c, "warm_seconds")} for c in CONTENDERS}
    return {"heads": rows, "timing": timing, "max_same_seed_diff": float(same_seed), "chain_steps": chain_steps,
            "init_loss": {c: runs[c][0]["init_loss"] for c in CONTENDERS},
            "num_devices": runs["one"][0]["num_devices"], "threads": [r["threads"] for r in runs["devinterp"]],
            "repeats": len(runs["one"])}


def _verdict(x: float, target: float) -> str:
    return f"met ({x:.1f}× ≥ {target:g}×)" if x >= target else f"missed ({x:.1f}× < {target:g}×)"


def render(saved: dict) -> str:
    spec, s, tr, env = saved["spec"], saved["summary"], saved["trajectory"], saved["env"]
    t = s["timing"]
    lines = [
        f"{env['machine']}, load {env['load']:.1f} at the start (shared with other jobs); slt on jax {env['jax']}, "
        f"one XLA CPU device per core ({s['num_devices']} here); devinterp {env['devinterp']} on torch {env['torch']} "
        f"(threads chosen on the spot: {'/'.join(map(str, s['threads']))}). Generated by `python bench/components.py "
        "--write`: each contender in a fresh process (persistent compilation cache off), interleaved, "
        f"{s['repeats']} repeats, medians; ratios taken within a repeat.",
        "",
        f"Model: the modular-addition transformer (p = {MODEL['p']}, train fraction {MODEL['train_frac']}, d_model "
        f"{MODEL['d_model']}, {MODEL['num_heads']} heads, d_mlp {MODEL['d_mlp']}; {spec['num_params']:,} parameters, "
        f"{next(iter(spec['num_free'].values())):,} free per head) after {saved['epochs']:,} epochs of AdamW "
        f"(test accuracy {tr['metrics']['test_acc'][-1]:.3f}). SGLD ε = {spec['step_size']:g}, "
        f"nβ = n/log n = {spec['nbeta']:.1f} (n = {spec['n']}), γ = {spec['localization']:g}, batch "
        f"{spec['batch_size']}, {spec['num_chains']} chains × {spec['num_draws']} draws per head, no burn-in, "
        f"no MALA checks: {s['chain_steps']:,} chain-steps per job (all {len(spec['heads'])} heads). "
        f"L(w*) = {s['init_loss']['one']:.3g} in slt, {s['init_loss']['devinterp']:.3g} in the torch mirror.",
        "",
        "| contender | cold s (compile) | × (a), cold | warm s | × (a), warm | chain-steps/s, warm |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in CONTENDERS:
        comp = f" ({t[c]['compile']:.1f})" if c != "devinterp" else ""
        lines.append(f"| {LABELS[c]} | {t[c]['cold']:.1f}{comp} | {t[c]['cold_ratio']:.2f}× | {t[c]['warm']:.1f} | "
                     f"{t[c]['warm_ratio']:.2f}× | {t[c]['chain_steps_per_s']:,.0f} |")
    lines += [
        "",
        "cold: the whole job (every head) in a fresh process, slt's tracing and compilation included; warm: the "
        "same job again in that process (another seed). × (a): the contender's time over (a)'s, the median over "
        "repeats of the ratio within each repeat.",
        "",
        f"Targets (issue 21): (a) ≥ {TARGETS['loop']:g}× faster than (b): cold {_verdict(t['loop']['cold_ratio'], TARGETS['loop'])}, "
        f"warm {_verdict(t['loop']['warm_ratio'], TARGETS['loop'])}; (a) ≥ {TARGETS['devinterp']:g}× faster than (c): "
        f"cold {_verdict(t['devinterp']['cold_ratio'], TARGETS['devinterp'])}, "
        f"warm {_verdict(t['devinterp']['warm_ratio'], TARGETS['devinterp'])}. For reference, against (b′), a loop "
        f"that compiles every call: cold {t['loop_recompile']['cold_ratio']:.1f}×, warm {t['loop_recompile']['warm_ratio']:.1f}×.",
        "",
        "Per head (λ̂ ± standard error across chains, pooled over repeats; (a) and (b) ran the same seeds; "
        "(b′) gives (b)'s values; z = ((a) − (c)) / combined standard error):",
        "",
        "| head | free parameters | (a) one call | (b) loop | (c) devinterp | z (a) vs (c) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in s["heads"]:
        lines.append(f"| {r['head']} | {r['num_free']:,} | {r['one']:.3f} ± {r['one_se']:.3f} | {r['loop']:.3f} ± "
                     f"{r['loop_se']:.3f} | {r['devinterp']:.3f} ± {r['devinterp_se']:.3f} | {r['z_devinterp']:+.1f} |")
    zmax = max(abs(r["z_devinterp"]) for r in s["heads"])
    lines += [
        "",
        f"(a) and (b), same seed: largest difference of one chain's λ̂ {s['max_same_seed_diff']:.2g} (float rounding: a "
        "component run with the others is the same chains as the restriction run alone). (a) against devinterp: "
        f"largest |z| = {zmax:.1f} ({'within' if zmax < 3 else 'NOT within'} 3 standard errors).",
        "",
        f"Per-head LLC over training (`estimate_llc_components(components=\"heads\")` at each checkpoint, same "
        f"settings but {tr['num_draws']} draws; {tr['wall_seconds']:.0f} s for {len(tr['steps'])} checkpoints, one "
        "compile):",
        "",
        "| epoch | train loss | test acc | " + " | ".join(spec["heads"]) + " |",
        "|---:|---:|---:|" + "---:|" * len(spec["heads"]),
    ]
    for i, step in enumerate(tr["steps"]):
        m = tr["metrics"]
        cells = [f"{tr['heads'][h]['mean'][i]:.2f} ± {tr['heads'][h]['sem'][i]:.2f}" for h in spec["heads"]]
        lines.append(f"| {step:,} | {m['train_loss'][i]:.3g} | {m['test_acc'][i]:.3f} | " + " | ".join(cells) + " |")
    if tr.get("warnings"):
        first = {step: ws[0] for step, ws in tr["warnings"].items()}
        lines += ["", "Estimator warnings (the first at each checkpoint that has any): "
                  + "; ".join(f"epoch {step}: {w}" for step, w in first.items()) + "."]
    lines += ["", "![per-head LLC over training, and at the end three ways](img/modular_heads.png)"]
    return "\n".join(lines)


def plot(saved: dict, path: Path = IMG) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec, s, tr = saved["spec"], saved["summary"], saved["trajectory"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    steps = np.asarray(tr["steps"], float)
    x = np.where(steps == 0, 0.5 * steps[steps > 0].min(), steps)  # epoch 0 drawn at half the first epoch (log axis)
    for h in spec["heads"]:
        ax.errorbar(x, tr["heads"][h]["mean"], yerr=tr["heads"][h]["sem"], marker="o", ms=4, capsize=2, label=h)
    ax.set_xscale("log")
    ax.set_xlabel("epoch (0 drawn at the left edge)")
    ax.set_ylabel("weight-refined LLC of the head")
    ax.set_title("Per-head LLC over training")
    acc = ax.twinx()
    acc.plot(x, tr["metrics"]["train_acc"], "k--", lw=1, label="train acc")
    acc.plot(x, tr["metrics"]["test_acc"], "k:", lw=1.5, label="test acc")
    acc.set_ylim(0, 1.05)
    acc.set_ylabel("accuracy")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = acc.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")

    rows = s["heads"]
    idx = np.arange(len(rows))
    w = 0.27
    for j, c in enumerate(("one", "loop", "devinterp")):
        bx.bar(idx + (j - 1) * w, [r[c] for r in rows], w, yerr=[r[f"{c}_se"] for r in rows], capsize=2,
               label={"one": "(a) one call", "loop": "(b) loop", "loop_recompile": "(b′) loop, recompiling",
                      "devinterp": "(c) devinterp"}[c])
    bx.set_xticks(idx, [r["head"] for r in rows])
    bx.set_ylabel("λ̂ at the last checkpoint")
    t = s["timing"]
    bx.set_title(f"cold: (a) {t['one']['cold']:.0f} s, (b) {t['loop']['cold']:.0f} s, (c) {t['devinterp']['cold']:.0f} s",
                 fontsize=10)
    bx.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def environment(bench_python: str) -> dict:
    import jax

    from common import devinterp_versions, machine_line

    out = {"machine": machine_line(), "jax": jax.__version__, "load": os.getloadavg()[0]}
    out["torch"], out["devinterp"] = devinterp_versions(bench_python) or ("?", "?")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=CONTENDERS)
    ap.add_argument("--spec")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--draws", type=int, default=SAMPLING["num_draws"], help="draws per chain in the speed comparison")
    ap.add_argument("--trajectory-draws", type=int, default=TRAJECTORY_DRAWS)
    ap.add_argument("--bench-python", default=DEFAULT_BENCH_PYTHON)
    ap.add_argument("--json", help="save the results here")
    ap.add_argument("--write", action="store_true", help="write the tables into docs/refined.md and the plot")
    ap.add_argument("--render", metavar="JSON", help="only render (and with --write, write) saved results")
    args = ap.parse_args(argv)

    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        if args.worker == "devinterp":
            res = run_devinterp(spec, args.seed)
        else:
            from slt.compilation_cache import enable_persistent_cache
            from slt.cpu import use_cpu_cores_from_env

            use_cpu_cores_from_env()  # as the slt CLI: one XLA CPU device per core
            enable_persistent_cache()  # SLT_COMPILATION_CACHE=off (set by _worker)
            res = run_slt(spec, args.seed, args.worker)
        print(json.dumps(res))
        return 0

    if args.render:
        saved = json.loads(Path(args.render).read_text())
    else:
        from slt.cpu import use_cpu_cores

        use_cpu_cores()
        env = environment(args.bench_python)
        tmp = Path(tempfile.mkdtemp(prefix="slt-components-"))
        task, run, history, train_s = train_task(args.epochs)
        print(f"trained {args.epochs} epochs in {train_s:.0f} s: {history[-1]}", flush=True)
        spec_path = write_spec(task, run.final_params, tmp, args.draws)
        spec = json.loads(spec_path.read_text())
        runs = {c: [] for c in CONTENDERS}
        for r in range(args.repeats):
            for c in CONTENDERS:
                python = args.bench_python if c == "devinterp" else sys.executable
                runs[c].append(_worker(python, c, spec_path, seed=r))
                print(f"repeat {r} {c}: " + json.dumps({k: v for k, v in runs[c][-1].items() if k != "llc_per_chain"}),
                      flush=True)
        summary = summarize(spec, runs)
        tr = trajectory(task, run, history, spec, args.trajectory_draws)
        saved = {"env": env, "spec": spec, "epochs": args.epochs, "train_seconds": train_s, "summary": summary,
                 "trajectory": tr, "runs": runs}
        if args.json:
            Path(args.json).write_text(json.dumps(saved, indent=1))
    text = render(saved)
    print(text)
    if args.write:
        from common import write_section

        write_section("refined.md", "components", text)
        print(f"wrote docs/refined.md and {plot(saved)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
