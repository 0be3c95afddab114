"""A torch model through slt.from_torch: against the same network in native JAX, and against devinterp.

One devinterp-style MLP (GELU, cross-entropy), trained in torch; its weights are the point w* of every
contender, each run in its own fresh process, interleaved, repeated:

- ``bridged``: ``slt.from_torch(module, loss)`` on the torch module (torchax), ``slt.estimate_llc``;
- ``native``: the same network written by hand in JAX (torch's names and layout, exact GELU), the same call;
- ``devinterp``: devinterp 1.3.2's ``estimate_learning_coeff_with_summary`` on the same torch module, in the
  devinterp venv (see bench/vs_devinterp.py for how it is installed and set up: its best of 1 or 2 torch
  threads, a whole-minibatch loader, ``cores=1``);
- ``devinterp_iid``: the same, fed an endless stream of with-replacement minibatches (slt's scheme). devinterp
  draws its batches through ``itertools.cycle(loader)``, which replays the first epoch's batches in the same
  order for every later draw (n/batch = 64 distinct batches here, for 500 draws); that fixed schedule, not the
  sampler, is what separates its λ̂ from slt's at batch 64 (both agree at full batch).

All get the same w*, data, ε, nβ, γ, batch size, chains and draws (no burn-in). Reported: steady-state
chain-steps/s (median over more estimates in the same process after its first: slt's sampling time with the
program compiled, devinterp's wall time), the wall time of the first estimate in a fresh process (slt:
from_torch, tracing and compilation included, persistent compilation cache off), and λ̂ with its standard
error (sd across chains / √chains, pooled over the repeats). slt runs on one XLA CPU device
(``SLT_CPU_DEVICES=off``), both sides.

    python bench/torch_bridge.py [--repeats 3] [--bench-python /work/bench-venv/bin/python] [--write]

``--write`` puts the table into docs/benchmarks.md and docs/torch.md between
``<!-- torch_bridge:start -->`` and ``<!-- torch_bridge:end -->``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # in both environments

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import devinterp_versions, run_worker, write_section  # noqa: E402

ROOT = HERE.parent
DOCS = ROOT / "docs"
DEFAULT_BENCH_PYTHON = os.environ.get("SLT_BENCH_PYTHON", "/work/bench-venv/bin/python")
WARM_ESTIMATES = 4
SETTINGS = dict(step_size=1e-4, localization=100.0, num_chains=4, num_draws=500, batch_size=64)
SIZES = dict(d_in=16, hidden=64, classes=10, n=4096)
TARGETS = {"bridged / native (steady)": 0.8, "bridged / devinterp (steady)": 10.0,
           "bridged / devinterp (incl. compilation)": 3.0}


# ----------------------------------------------------------------------------- the model (torch, both venvs)


def make_module(sizes: dict):
    import torch
    from torch import nn

    class MLP(nn.Module):  # devinterp's examples: Linear-GELU-Linear-GELU-Linear
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(sizes["d_in"], sizes["hidden"])
            self.fc2 = nn.Linear(sizes["hidden"], sizes["hidden"])
            self.out = nn.Linear(sizes["hidden"], sizes["classes"])

        def forward(self, x):
            return self.out(torch.nn.functional.gelu(self.fc2(torch.nn.functional.gelu(self.fc1(x)))))

    return MLP()


def loss(module, batch):
    import torch.nn.functional as F

    x, y = batch
    return F.cross_entropy(module(x), y)


def load_module(spec: dict):
    import torch

    module = make_module(spec["sizes"])
    arrays = np.load(spec["npz"])
    module.load_state_dict({k[len("param/"):]: torch.from_numpy(arrays[k]) for k in arrays if k.startswith("param/")})
    return module.eval(), (arrays["data/x"], arrays["data/y"])


def write_spec(directory: Path, seed: int = 0) -> Path:
    """Train the MLP in torch on a random teacher's labels; w* and the data into an npz, the settings into JSON."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n, d = SIZES["n"], SIZES["d_in"]
    x = rng.normal(size=(n, d)).astype(np.float32)
    teacher = rng.normal(size=(d, SIZES["classes"])).astype(np.float32)
    y = np.argmax(x @ teacher + 0.5 * rng.normal(size=(n, SIZES["classes"])), axis=1).astype(np.int64)
    module = make_module(SIZES)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for step in range(1500):
        idx = torch.from_numpy(rng.integers(0, n, 256))
        opt.zero_grad()
        loss(module, (xt[idx], yt[idx])).backward()
        opt.step()
    with torch.no_grad():
        train_loss = float(loss(module, (xt, yt)))
    arrays = {f"param/{k}": v.detach().numpy() for k, v in module.state_dict().items()}
    np.savez(directory / "mlp.npz", **arrays, **{"data/x": x, "data/y": y})
    spec = {"sizes": SIZES, **SETTINGS, "n": n, "nbeta": n / math.log(n), "npz": str(directory / "mlp.npz"),
            "train_loss": train_loss, "num_params": int(sum(v.size for v in arrays.values()))}
    path = directory / "mlp.json"
    path.write_text(json.dumps(spec))
    return path


# ----------------------------------------------------------------------------- workers


def native_loss(params, batch):
    """The MLP by hand in JAX: torch's names and [out, in] layout, torch's exact (erf) GELU."""
    import jax
    import jax.numpy as jnp

    x, y = batch
    gelu = lambda a: jax.nn.gelu(a, approximate=False)  # jax.nn.gelu's default is the tanh approximation
    h = gelu(x @ params["fc1.weight"].T + params["fc1.bias"])
    h = gelu(h @ params["fc2.weight"].T + params["fc2.bias"])
    logits = h @ params["out.weight"].T + params["out.bias"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def run_slt(spec: dict, side: str, seed: int) -> dict:
    import jax.numpy as jnp

    import slt

    kwargs = dict(step_size=spec["step_size"], nbeta=spec["nbeta"], localization=spec["localization"],
                  num_chains=spec["num_chains"], num_draws=spec["num_draws"], batch_size=spec["batch_size"],
                  progress=False, acceptance_checks=0)  # devinterp runs no MALA check either
    module, data = load_module(spec)
    t0 = time.perf_counter()
    if side == "bridged":
        loss_fn, params = slt.from_torch(module, loss)
    else:
        loss_fn = native_loss
        params = {k: jnp.asarray(v.detach().numpy()) for k, v in module.named_parameters()}
    res = slt.estimate_llc(loss_fn, params, data, seed=seed, **kwargs)
    wall = time.perf_counter() - t0
    warm = [slt.estimate_llc(loss_fn, params, data, seed=seed + 1 + k, **kwargs).timing["sample_seconds"]
            for k in range(WARM_ESTIMATES)]
    return {"wall_seconds": wall, "compile_seconds": res.timing["compile_seconds"],
            "warm_sample_seconds": float(np.median(warm)), "init_loss": res.init_loss,
            "llc_mean": res.llc_mean, "llc_per_chain": np.asarray(res.llc_per_chain).tolist()}


def iid_loader(loader, tensors, batch_size: int, seed: int):
    """``loader`` turned into an endless stream of with-replacement minibatches (so ``itertools.cycle`` never replays)."""
    import torch

    gen = torch.Generator().manual_seed(seed)  # one stream for the loader: each chain's iter() continues it

    class Endless(type(loader)):
        def __iter__(self):
            while True:
                idx = torch.randint(0, tensors[0].shape[0], (batch_size,), generator=gen)
                yield tuple(t[idx] for t in tensors)

    loader.__class__ = Endless
    return loader


def run_devinterp(spec: dict, seed: int, iid: bool = False) -> dict:
    sys.path.insert(0, str(HERE))
    import torch
    from vs_devinterp import best_threads, fast_loader, timed_devinterp_estimates

    import warnings

    warnings.filterwarnings("ignore")
    module, (x, y) = load_module(spec)
    tensors = [torch.from_numpy(x), torch.from_numpy(y)]
    loader = fast_loader(tensors, spec["batch_size"], seed)
    if iid:
        loader = iid_loader(loader, tensors, spec["batch_size"], seed)
    torch.set_num_threads(best_threads(module, loss, next(iter(loader))))
    wall, warm, init_loss, out = timed_devinterp_estimates(module, loader, loss, tensors, spec, seed, WARM_ESTIMATES)
    per_chain = [float(out[f"llc-chain/{i}"]) for i in range(spec["num_chains"])]
    return {"wall_seconds": wall, "compile_seconds": 0.0, "warm_sample_seconds": warm,
            "init_loss": init_loss, "llc_mean": float(np.mean(per_chain)), "llc_per_chain": per_chain,
            "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- driver

CONTENDERS = ("bridged", "native", "devinterp", "devinterp_iid")


def _worker(python: str, side: str, spec_path: Path, seed: int) -> dict:
    return run_worker(__file__, python, side, spec_path, seed, cpu_devices="off")


def _pooled(runs: list[dict]) -> tuple[float, float]:
    """λ̂ mean and its standard error over all chains of all repeats (first estimate of each process)."""
    x = np.concatenate([r["llc_per_chain"] for r in runs])
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))


def summarize(spec: dict, runs: dict) -> dict:
    steps = spec["num_chains"] * spec["num_draws"]
    med = lambda side, key: float(np.median([r[key] for r in runs[side]]))
    out = {side: {"steady_chain_steps_per_s": steps / med(side, "warm_sample_seconds"),
                  "first_wall_seconds": med(side, "wall_seconds"), "compile_seconds": med(side, "compile_seconds"),
                  "llc": _pooled(runs[side])} for side in runs}
    # ratios per repeat (side by side in time), then their median
    rep = len(runs["bridged"])
    ratio = lambda a, b, key: float(np.median([runs[b][i][key] / runs[a][i][key] for i in range(rep)]))
    out["ratios"] = {
        "bridged / native (steady)": ratio("bridged", "native", "warm_sample_seconds"),
        "bridged / devinterp (steady)": ratio("bridged", "devinterp", "warm_sample_seconds"),
        "bridged / devinterp (incl. compilation)": ratio("bridged", "devinterp", "wall_seconds"),
    }
    same_seed = [abs(runs["bridged"][i]["llc_mean"] - runs["native"][i]["llc_mean"]) for i in range(rep)]
    out["bridged_minus_native_same_seed"] = float(max(same_seed))
    for other in ("devinterp", "devinterp_iid"):
        (a, sa), (b, sb) = out["bridged"]["llc"], out[other]["llc"]
        out[f"z_bridged_vs_{other}"] = (a - b) / math.hypot(sa, sb)
    return out


def render(spec: dict, summary: dict, env: dict) -> str:
    lines = [
        f"devinterp-style MLP ({spec['sizes']['d_in']}-{spec['sizes']['hidden']}-{spec['sizes']['hidden']}-"
        f"{spec['sizes']['classes']}, GELU, cross-entropy; d = {spec['num_params']}), trained in torch "
        f"(train loss {spec['train_loss']:.3f}); n = {spec['n']}, batch {spec['batch_size']}, "
        f"{spec['num_chains']} chains × {spec['num_draws']} draws, ε = {spec['step_size']:g}, "
        f"γ = {spec['localization']:g}, nβ = n/log n = {spec['nbeta']:.1f}; {env['repeats']} repeats, "
        "each contender in its own fresh process, interleaved.",
        "",
        "| contender | steady chain-steps/s | first estimate, wall s (incl. compilation) | compile s | λ̂ ± se |",
        "|---|---|---|---|---|",
    ]
    names = {"bridged": "slt, `slt.from_torch` (torchax)", "native": "slt, the same MLP in native JAX",
             "devinterp": f"devinterp {env.get('devinterp', '?')} (torch {env.get('bench_torch', '?')})",
             "devinterp_iid": "devinterp, with-replacement minibatches (slt's scheme)"}
    for side in CONTENDERS:
        s = summary[side]
        lines.append(f"| {names[side]} | {s['steady_chain_steps_per_s']:,.0f} | {s['first_wall_seconds']:.2f} | "
                     f"{s['compile_seconds']:.2f} | {s['llc'][0]:.2f} ± {s['llc'][1]:.2f} |")
    lines += ["", "| ratio (median over repeats) | measured | target | |", "|---|---|---|---|"]
    for name, value in summary["ratios"].items():
        target = TARGETS[name]
        lines.append(f"| {name} | {value:.2f}× | ≥ {target:g}× | {'met' if value >= target else '**missed**'} |")
    lines += [
        "",
        f"λ̂ agreement: bridged vs native JAX at the same seed differ by at most "
        f"{summary['bridged_minus_native_same_seed']:.2g} (float32 reduction order); bridged vs devinterp "
        f"z = {summary['z_bridged_vs_devinterp']:+.2f} (difference over the combined standard error; |z| < 2 "
        f"is agreement within errors); bridged vs devinterp fed with-replacement minibatches z = "
        f"{summary['z_bridged_vs_devinterp_iid']:+.2f}. devinterp draws its minibatches through "
        "`itertools.cycle(loader)`, which replays the first epoch's batches in the same order for all later draws "
        f"({spec['n'] // spec['batch_size']} distinct batches for {spec['num_draws']} draws here); slt draws each "
        "step's batch afresh. That fixed schedule, not the sampler, is the difference: fed an endless stream of "
        "fresh batches, devinterp agrees with slt. (Minibatch noise matters at this ε and nβ: both give a lower λ̂ "
        "at full batch.)",
        "",
        f"Machine: {env['machine']}; slt on one XLA CPU device (`SLT_CPU_DEVICES=off`); devinterp with "
        f"{env.get('threads', '?')} torch thread(s), its faster setting here. {env['versions']}. "
        "Run: `python bench/torch_bridge.py --write`. The machine is shared; the ratios are taken side by side "
        "within each repeat.",
    ]
    return "\n".join(lines)


def environment(bench_python: str) -> dict:
    from importlib.metadata import version

    import jax
    import torch

    env = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
           "versions": f"jax {jax.__version__}, torch {torch.__version__}, torchax {version('torchax')}"}
    versions = devinterp_versions(bench_python)
    if versions is not None:
        env["bench_torch"], env["devinterp"] = versions
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=CONTENDERS)
    ap.add_argument("--spec")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bench-python", default=DEFAULT_BENCH_PYTHON)
    ap.add_argument("--json", help="also save the raw results here")
    ap.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md and docs/torch.md")
    args = ap.parse_args(argv)

    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        result = (run_devinterp(spec, args.seed, iid=args.worker == "devinterp_iid") if args.worker.startswith("devinterp")
                  else run_slt(spec, args.worker, args.seed))
        print(json.dumps(result))
        return 0

    import slt.torch_bridge

    slt.torch_bridge._torchax()  # torchax imported the way slt does (torch 2.13)
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = write_spec(Path(tmp))
        spec = json.loads(spec_path.read_text())
        runs = {side: [] for side in CONTENDERS}
        for r in range(args.repeats):
            for side in CONTENDERS:
                python = args.bench_python if side.startswith("devinterp") else sys.executable
                runs[side].append(_worker(python, side, spec_path, seed=r))
                shown = {k: v for k, v in runs[side][-1].items() if k != "llc_per_chain"}
                print(f"repeat {r} {side}: {json.dumps(shown)}", flush=True)
    env = {**environment(args.bench_python), "repeats": args.repeats, "threads": runs["devinterp"][0].get("threads")}
    summary = summarize(spec, runs)
    table = render(spec, summary, env)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"spec": spec, "runs": runs, "summary": summary, "env": env}, indent=1))
    if args.write:
        write_section("benchmarks.md", "torch_bridge", table, heading="## PyTorch models through `slt.from_torch`")
        write_section("torch.md", "torch_bridge", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
