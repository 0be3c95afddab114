"""slt against devinterp (PyTorch) on the same model, data, loss and hyperparameters.

devinterp runs in a SEPARATE virtual environment (it is never a dependency of
slt); each contender runs in its own fresh process, interleaved, repeated:

    python3 -m venv /work/bench-venv
    /work/bench-venv/bin/pip install torch==2.13.0          # the CPU wheel
    /work/bench-venv/bin/pip install devinterp==1.3.2 --no-deps
    /work/bench-venv/bin/pip install numpy pandas tqdm einops cloudpickle matplotlib
    python bench/vs_devinterp.py [--bench-python /work/bench-venv/bin/python] [--write]

Both sides get the same point w*, data, ε, nβ, γ, batch size, chains and
draws (no burn-in, one step per draw), the same conventions
(Δw = -(ε/2)(nβ∇L_B + γ(w - w*)) + N(0, ε)) and L(w*) on the full data.
devinterp gets its best CPU settings: 1 or 2 torch threads, whichever is
faster on the spot (on a busy 2-core machine 2 threads can be 10× slower), ``cores=1``
(its multi-process mode loses the callbacks' results on CPU), a loader that
indexes whole shuffled minibatches at once instead of a DataLoader's
per-example collation, no progress bars. slt runs as its command line does,
one XLA CPU device per core (``slt.use_cpu_cores``), and again on one device
(``SLT_CPU_DEVICES=off``). Reported: chain-steps per second (each side's
median over 5 more estimates after its first in the process: its steady state),
wall time of the whole estimate (including slt's compilation, in a fresh
process, persistent compilation cache off), and the two LLC estimates with
their standard errors (sd across chains / √chains).

Devinterp 2.x is a language-model API (HF datasets of ``input_ids``, zarr
output); 1.3.2 is the last release with the generic
``estimate_learning_coeff_with_summary(model, loader, evaluate, ...)`` used here.
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
from common import devinterp_versions, run_worker, write_section  # noqa: E402
ROOT = HERE.parent
DEFAULT_BENCH_PYTHON = os.environ.get("SLT_BENCH_PYTHON", "/work/bench-venv/bin/python")
MODELS = ("tms", "grokking_mlp", "dln_1e4", "mlp_1m")
SETTINGS = {  # chains, draws (the 1M-parameter MLP: fewer, the peer needs minutes)
    "tms": (4, 500),
    "grokking_mlp": (4, 500),
    "dln_1e4": (4, 500),
    "mlp_1m": (2, 100),
}


# ----------------------------------------------------------------------------
# spec files: the JAX side writes w*, data and settings; both workers read them
# ----------------------------------------------------------------------------


def write_spec(name: str, directory: Path, num_chains: int, num_draws: int) -> Path:
    import jax

    sys.path.insert(0, str(HERE))
    from speed import make_model

    model = make_model(name, num_chains=num_chains, num_steps=num_draws)
    flat, _ = jax.tree.flatten_with_path(model.params)
    arrays = {"param/" + jax.tree_util.keystr(path): np.asarray(x) for path, x in flat}
    arrays.update({f"data/{k}": np.asarray(v) for k, v in model.data.items()})
    np.savez(directory / f"{name}.npz", **arrays)
    spec = {
        "name": name, "kind": model.kind, "meta": {k: v for k, v in model.meta.items() if k != "module"},
        "step_size": model.step_size, "nbeta": model.nbeta, "localization": model.localization,
        "batch_size": model.batch_size, "num_chains": num_chains, "num_draws": num_draws, "n": model.n,
        "num_params": model.num_params, "npz": str(directory / f"{name}.npz"),
    }
    path = directory / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


# ----------------------------------------------------------------------------
# the devinterp worker (runs in the bench venv: torch + devinterp, no jax)
# ----------------------------------------------------------------------------


def torch_twin(spec: dict, arrays: dict):
    """The PyTorch model with exactly the JAX parameters, and ``evaluate(model, batch) -> loss``."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    P = {k[len("param/"):]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith("param/")}
    kind = spec["kind"]

    class TMS(nn.Module):
        def __init__(self):
            super().__init__()
            self.W = nn.Parameter(P["['W']"])
            self.b = nn.Parameter(P["['b']"])

        def forward(self, x):
            return torch.relu((x @ self.W.T) @ self.W + self.b)

    class Grokking(nn.Module):  # REFERENCE.md §5: E, L, R, GELU, W_out (no bias)
        def __init__(self):
            super().__init__()
            e = P["['embed']['embedding']"]
            self.embed = nn.Embedding(*e.shape)
            self.left = nn.Linear(e.shape[1], P["['left']['kernel']"].shape[1])
            self.right = nn.Linear(e.shape[1], P["['right']['kernel']"].shape[1])
            self.out = nn.Linear(P["['out']['kernel']"].shape[0], P["['out']['kernel']"].shape[1], bias=False)
            with torch.no_grad():
                self.embed.weight.copy_(e)
                for name in ("left", "right"):
                    getattr(self, name).weight.copy_(P[f"['{name}']['kernel']"].T)
                    getattr(self, name).bias.copy_(P[f"['{name}']['bias']"])
                self.out.weight.copy_(P["['out']['kernel']"].T)

        def forward(self, x):
            e = self.embed(x)
            return self.out(F.gelu(self.left(e[:, 0]) + self.right(e[:, 1])))

    class DLN(nn.Module):
        def __init__(self):
            super().__init__()
            keys = sorted((k for k in P if k.startswith("['layers']")), key=lambda k: int(k.split("[")[2].rstrip("]")))
            self.layers = nn.ParameterList([nn.Parameter(P[k]) for k in keys])

        def forward(self, x):
            for w in self.layers:
                x = x @ w
            return x

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            count = len({k.split("]")[1] for k in P if k.startswith("['layers']")})
            self.linears = nn.ModuleList()
            for i in range(count):
                k, b = P[f"['layers'][{i}]['kernel']"], P[f"['layers'][{i}]['bias']"]
                lin = nn.Linear(*k.shape)
                with torch.no_grad():
                    lin.weight.copy_(k.T)
                    lin.bias.copy_(b)
                self.linears.append(lin)

        def forward(self, x):
            for i, lin in enumerate(self.linears):
                x = lin(x)
                if i + 1 < len(self.linears):
                    x = torch.relu(x)
            return x

    if kind == "tms":
        model = TMS()

        def evaluate(model, batch):
            x = batch[0]
            return ((x - model(x)) ** 2).sum(-1).mean()
    elif kind == "grokking":
        model = Grokking()

        def evaluate(model, batch):
            x, y = batch
            return F.cross_entropy(model(x.long()), y.long())
    elif kind == "dln":
        model = DLN()

        def evaluate(model, batch):
            x, y = batch
            return ((y - model(x)) ** 2).sum(-1).mean()
    elif kind == "mlp":
        model = MLP()

        def evaluate(model, batch):
            x, y = batch
            return F.cross_entropy(model(x), y.long())
    else:
        raise ValueError(kind)
    return model, evaluate


def fast_loader(tensors, batch_size: int, seed: int):
    """A shuffling loader that indexes whole minibatches at once (a DataLoader collates example by example)."""
    import torch

    from torch.utils.data import DataLoader, TensorDataset

    class Loader(DataLoader):
        def __init__(self):
            super().__init__(TensorDataset(*tensors), batch_size=batch_size, drop_last=True)
            self._gen = torch.Generator().manual_seed(seed)

        def __len__(self):
            return tensors[0].shape[0] // batch_size

        def __iter__(self):
            perm = torch.randperm(tensors[0].shape[0], generator=self._gen)
            for i in range(len(self)):
                idx = perm[i * batch_size : (i + 1) * batch_size]
                yield tuple(t[idx] for t in tensors)

    return Loader()


def best_threads(model, evaluate, batch, steps: int = 10) -> int:
    """1 or 2 torch threads, whichever runs forward + backward faster here (2 threads can be far slower on a busy machine)."""
    import torch

    times = {1: [], 2: []}
    for _ in range(3):
        for th in (1, 2):
            torch.set_num_threads(th)
            evaluate(model, batch).backward()
            t0 = time.perf_counter()
            for _ in range(steps):
                evaluate(model, batch).backward()
            times[th].append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return min(times, key=lambda th: sorted(times[th])[1])


def _devinterp_setup(spec: dict, seed: int):
    """The torch twin of the spec's model, its data tensors and loader, with the faster thread count set."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    arrays = dict(np.load(spec["npz"]))
    model, evaluate = torch_twin(spec, arrays)
    names = ["x", "y"] if "data/y" in arrays else ["x"]
    tensors = [torch.from_numpy(arrays[f"data/{k}"]) for k in names]
    loader = fast_loader(tensors, min(spec["batch_size"], spec["n"]), seed)
    torch.set_num_threads(best_threads(model, evaluate, next(iter(loader))))
    return model, evaluate, tensors, loader


def timed_devinterp_estimates(model, loader, evaluate, tensors, spec: dict, seed: int, warm_estimates: int):
    """devinterp's SGLD estimate of ``spec``'s job, timed: one first estimate (its wall time pays torch's warm-up),
    then ``warm_estimates`` more in the same process (steady state). Returns (wall s, median warm s, L(w*), summary).
    """
    import torch
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary

    def estimate(chain_seed):
        with torch.no_grad():
            init_loss = float(evaluate(model, tuple(tensors)))
        return init_loss, estimate_learning_coeff_with_summary(
            model, loader, evaluate=evaluate, sampling_method=SGLD,
            optimizer_kwargs=dict(lr=spec["step_size"], nbeta=spec["nbeta"], localization=spec["localization"]),
            num_draws=spec["num_draws"], num_chains=spec["num_chains"], num_burnin_steps=0, num_steps_bw_draws=1,
            init_loss=init_loss, cores=1, seed=chain_seed, device="cpu", verbose=False,
        )

    t0 = time.perf_counter()
    init_loss, out = estimate(seed)
    wall = time.perf_counter() - t0
    warm = []  # more estimates in the same process: devinterp's steady state, as for slt
    for k in range(warm_estimates):
        t1 = time.perf_counter()
        estimate(seed + 1 + k)
        warm.append(time.perf_counter() - t1)
    return wall, float(np.median(warm)), init_loss, out


def run_devinterp(spec: dict, seed: int) -> dict:
    import torch

    model, evaluate, tensors, loader = _devinterp_setup(spec, seed)
    wall, warm, init_loss, out = timed_devinterp_estimates(model, loader, evaluate, tensors, spec, seed, WARM_ESTIMATES)
    per_chain = np.asarray([out[f"llc-chain/{i}"] for i in range(spec["num_chains"])], float)
    return {"wall_seconds": wall, "warm_sample_seconds": warm, "compile_seconds": 0.0,
            "init_loss": init_loss, "llc_mean": float(per_chain.mean()), "llc_per_chain": per_chain.tolist(),
            "torch": torch.__version__, "devinterp": _version("devinterp"), "threads": torch.get_num_threads()}


def run_devinterp_checkpoints(spec: dict, seed: int, count: int) -> dict:
    """LLC at ``count`` checkpoints: one devinterp estimate per checkpoint (its only way)."""
    import copy

    import torch
    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary

    base, evaluate, tensors, loader = _devinterp_setup(spec, seed)
    gen = torch.Generator().manual_seed(1234)
    t0 = time.perf_counter()
    llcs = []
    for i in range(count):  # random-init checkpoints of the same MLP (timing)
        model = copy.deepcopy(base)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
            init_loss = float(evaluate(model, tuple(tensors)))
        out = estimate_learning_coeff_with_summary(
            model, loader, evaluate=evaluate, sampling_method=SGLD,
            optimizer_kwargs=dict(lr=spec["step_size"], nbeta=spec["nbeta"], localization=spec["localization"]),
            num_draws=spec["num_draws"], num_chains=spec["num_chains"], init_loss=init_loss, cores=1,
            seed=seed + i, device="cpu", verbose=False,
        )
        llcs.append(float(out["llc/mean"]))
    return {"wall_seconds": time.perf_counter() - t0, "llc_first": llcs[0], "llc_mean_over_checkpoints": float(np.mean(llcs))}


def _version(name: str) -> str:
    from importlib.metadata import version

    try:
        return version(name)
    except Exception:  # noqa: BLE001
        return "?"


# ----------------------------------------------------------------------------
# the slt worker (the slt venv)
# ----------------------------------------------------------------------------


def _load_jax_side(spec: dict):

    sys.path.insert(0, str(HERE))
    from speed import make_model

    model = make_model(spec["name"], num_chains=spec["num_chains"], num_steps=spec["num_draws"])
    arrays = dict(np.load(spec["npz"]))
    data = {k[len("data/"):]: v for k, v in arrays.items() if k.startswith("data/")}
    return model, data


def run_slt(spec: dict, seed: int) -> dict:

    import slt

    model, data = _load_jax_side(spec)
    kwargs = dict(step_size=spec["step_size"], nbeta=spec["nbeta"], localization=spec["localization"],
                  num_chains=spec["num_chains"], num_draws=spec["num_draws"], batch_size=min(spec["batch_size"], spec["n"]),
                  seed=seed, progress=False, acceptance_checks=0)  # devinterp computes no MALA check either
    t0 = time.perf_counter()
    res = slt.estimate_llc(model.loss_fn, model.params, data, **kwargs)
    wall = time.perf_counter() - t0
    warm_wall, warm_sample = [], []
    for k in range(WARM_ESTIMATES):  # the compiled program cached: slt's steady state
        t1 = time.perf_counter()
        warm = slt.estimate_llc(model.loss_fn, model.params, data, **{**kwargs, "seed": seed + 1 + k})
        warm_wall.append(time.perf_counter() - t1)
        warm_sample.append(warm.timing["sample_seconds"])
    import jax

    return {"wall_seconds": wall, "compile_seconds": res.timing["compile_seconds"],
            "sample_seconds": res.timing["sample_seconds"], "warm_wall_seconds": float(np.median(warm_wall)),
            "warm_sample_seconds": float(np.median(warm_sample)), "init_loss": res.init_loss,
            "num_devices": res.timing.get("num_devices", 1),
            "llc_mean": res.llc_mean, "llc_per_chain": np.asarray(res.llc_per_chain).tolist(),
            "jax": jax.__version__, "slt": slt.__version__}


def run_slt_checkpoints(spec: dict, seed: int, count: int) -> dict:
    """LLC at ``count`` checkpoints: slt.llc_trajectory when available, else a loop of estimate_llc
    (compiled once), and the same job as one program (checkpoints × chains with per-chain centers)."""
    import jax
    import jax.numpy as jnp

    import slt
    from slt.posterior import Hyperparameters
    from slt.sampling import RunConfig, run_chains

    model, data = _load_jax_side(spec)
    leaves, treedef = jax.tree.flatten(model.params)
    rng = np.random.default_rng(1234)
    checkpoints = [jax.tree.unflatten(treedef, [np.asarray(x) + 0.05 * rng.standard_normal(np.shape(x)).astype(np.float32)
                                                for x in leaves]) for _ in range(count)]
    kwargs = dict(step_size=spec["step_size"], nbeta=spec["nbeta"], localization=spec["localization"],
                  num_chains=spec["num_chains"], num_draws=spec["num_draws"], batch_size=spec["batch_size"], progress=False,
                  acceptance_checks=0)
    out = {}
    t0 = time.perf_counter()
    traj = slt.llc_trajectory(model.loss_fn, list(enumerate(checkpoints)), data, seed=seed, **kwargs)
    out["method"] = "slt.llc_trajectory"
    means = np.asarray(traj.llc_mean)
    out["wall_seconds"] = time.perf_counter() - t0
    out["llc_first"] = float(np.asarray(means).ravel()[0])
    out["llc_mean_over_checkpoints"] = float(np.nanmean(means))

    # the same job as ONE compiled program: count × chains chains, chain c localized at its checkpoint
    t0 = time.perf_counter()
    C = spec["num_chains"]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *checkpoints)
    init = np.asarray(jax.jit(jax.vmap(lambda p: model.loss_fn(p, data)))(stacked))
    centers = jax.tree.map(lambda x: jnp.repeat(x, C, axis=0), stacked)
    config = RunConfig("sgld", count * C, spec["num_draws"], spec["batch_size"], center_per_chain=True)
    run = run_chains(model.loss_fn, centers, data, Hyperparameters(spec["step_size"], spec["nbeta"], spec["localization"]),
                     config=config, seed=seed)
    llc = spec["nbeta"] * (run.loss_trace.mean(axis=1).reshape(count, C).mean(axis=1) - init)
    out["one_program_wall_seconds"] = time.perf_counter() - t0
    out["one_program_compile_seconds"] = run.compile_seconds
    out["one_program_llc_mean_over_checkpoints"] = float(np.mean(llc))
    return out


# ----------------------------------------------------------------------------
# the driver
# ----------------------------------------------------------------------------


#: warm estimates per process and side; their median time is the steady state (slt's small-model estimates
#: take ~50 ms, where one alone scattered by ±15%)
WARM_ESTIMATES = 5

CONTENDERS = {  # name -> (worker side, SLT_CPU_DEVICES): slt as the CLI runs it (one CPU device per core), and on one device
    "devinterp": ("devinterp", "off"),
    "slt": ("slt", "auto"),
    "slt_1dev": ("slt", "off"),
}
#: the checkpoint job only: slt's second run with the persistent compilation cache warm (what the `slt` CLI does)
CACHED = "slt_cached"


def _worker(python: str, contender: str, spec_path: Path, seed: int, checkpoints: int = 0) -> dict:
    side, cpu_devices = {**CONTENDERS, CACHED: ("slt", "auto")}[contender]
    cache = str(spec_path.parent / "xla-cache") if contender == CACHED else "off"
    return run_worker(__file__, python, side, spec_path, seed, cache=cache, cpu_devices=cpu_devices,
                      extra_args=("--checkpoints", checkpoints) if checkpoints else ())


def _interleaved(args, spec_path: Path, repeats: int, *, label: str, checkpoints: int = 0) -> dict:
    """Every contender once per repeat, in turn, each in a fresh process: {contender: [result, ...]}.

    The checkpoint job adds slt with the persistent compilation cache, warmed by one untimed run first."""
    contenders = list(CONTENDERS) + ([CACHED] if checkpoints else [])
    runs = {c: [] for c in contenders}
    if checkpoints:
        _worker(sys.executable, CACHED, spec_path, seed=0, checkpoints=checkpoints)
    for r in range(repeats):
        for side in contenders:
            python = args.bench_python if side == "devinterp" else sys.executable
            runs[side].append(_worker(python, side, spec_path, seed=r, checkpoints=checkpoints))
            print(f"{label} {side} repeat {r}: {json.dumps({k: v for k, v in runs[side][-1].items() if k != 'llc_per_chain'})}",
                  flush=True)
    return runs


def _se(per_chain) -> float:

    x = np.asarray(per_chain, float)
    return float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["slt", "devinterp"])
    ap.add_argument("--spec")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoints", type=int, default=0)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--checkpoint-job", type=int, default=100, help="checkpoints in the trajectory job (0 = skip)")
    ap.add_argument("--bench-python", default=DEFAULT_BENCH_PYTHON)
    ap.add_argument("--json")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--render", metavar="JSON", help="only render (and with --write, write) saved results")
    args = ap.parse_args(argv)

    if args.render:
        saved = json.loads(Path(args.render).read_text())
        text = render(saved["rows"], saved.get("job"), saved["env"])
        print(text)
        if args.write:
            write_section("benchmarks.md", "vs_devinterp", text)
        return 0

    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        if args.worker == "devinterp":
            res = run_devinterp_checkpoints(spec, args.seed, args.checkpoints) if args.checkpoints else run_devinterp(spec, args.seed)
        else:
            from slt.cpu import use_cpu_cores_from_env

            use_cpu_cores_from_env()  # as the slt CLI: SLT_CPU_DEVICES (set by _worker)
            from slt.compilation_cache import enable_persistent_cache

            enable_persistent_cache()  # as the slt CLI: SLT_COMPILATION_CACHE (set by _worker; "off" but for the cached job)
            res = run_slt_checkpoints(spec, args.seed, args.checkpoints) if args.checkpoints else run_slt(spec, args.seed)
        print(json.dumps(res))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="slt-vs-devinterp-"))
    rows = []
    for name in [m for m in args.models.split(",") if m]:  # --models "" runs only the checkpoint job
        chains, draws = SETTINGS[name]
        spec_path = write_spec(name, tmp, chains, draws)
        spec = json.loads(spec_path.read_text())
        runs = _interleaved(args, spec_path, args.repeats, label=name)
        row = summarize(name, spec, runs)
        rows.append(row)
        print(json.dumps(row), flush=True)
    job = None
    if args.checkpoint_job:
        chains, draws = SETTINGS["grokking_mlp"]
        spec_path = tmp / "grokking_mlp.json"
        if not spec_path.exists():
            spec_path = write_spec("grokking_mlp", tmp, chains, draws)
        job = {"checkpoints": args.checkpoint_job, **_interleaved(args, spec_path, max(1, args.repeats // 2),
                                                                  label="checkpoint job", checkpoints=args.checkpoint_job)}
    env = environment(args.bench_python)
    text = render(rows, job, env)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "rows": rows, "job": job}, indent=1))
    if args.write:
        write_section("benchmarks.md", "vs_devinterp", text)
    return 0


def summarize(name: str, spec: dict, runs: dict) -> dict:

    chain_steps = spec["num_chains"] * spec["num_draws"]
    med = lambda side, key: float(np.median([r[key] for r in runs[side]]))  # noqa: E731
    d_rate = chain_steps / med("devinterp", "warm_sample_seconds")
    s_rate = chain_steps / med("slt", "warm_sample_seconds")
    s1_rate = chain_steps / med("slt_1dev", "warm_sample_seconds")
    ratios = [d["warm_sample_seconds"] / s["warm_sample_seconds"] for d, s in zip(runs["devinterp"], runs["slt"])]
    ratios_1dev = [d["warm_sample_seconds"] / s["warm_sample_seconds"] for d, s in zip(runs["devinterp"], runs["slt_1dev"])]
    wall_ratios = [d["wall_seconds"] / s["wall_seconds"] for d, s in zip(runs["devinterp"], runs["slt"])]
    d_llc = np.concatenate([r["llc_per_chain"] for r in runs["devinterp"]])
    s_llc = np.concatenate([r["llc_per_chain"] for r in runs["slt"]])
    d_se, s_se = _se(d_llc), _se(s_llc)
    z = (s_llc.mean() - d_llc.mean()) / math.hypot(d_se, s_se)
    return {
        "model": name, "num_params": spec["num_params"], "batch_size": spec["batch_size"],
        "num_chains": spec["num_chains"], "num_draws": spec["num_draws"],
        "devinterp_chain_steps_per_s": d_rate, "slt_chain_steps_per_s": s_rate,
        "speedup_chain_steps": float(np.median(ratios)),
        "slt_1dev_chain_steps_per_s": s1_rate, "speedup_chain_steps_1dev": float(np.median(ratios_1dev)),
        "slt_devices": runs["slt"][0].get("num_devices", 1),
        "devinterp_wall_s": med("devinterp", "wall_seconds"), "slt_wall_s": med("slt", "wall_seconds"),
        "slt_compile_s": med("slt", "compile_seconds"), "speedup_wall": float(np.median(wall_ratios)),
        "devinterp_llc": float(d_llc.mean()), "devinterp_llc_se": d_se,
        "slt_llc": float(s_llc.mean()), "slt_llc_se": s_se, "z": float(z), "agree": bool(abs(z) < 3),
        "init_loss": [runs["devinterp"][0]["init_loss"], runs["slt"][0]["init_loss"]],
        "devinterp_threads": "/".join(str(r["threads"]) for r in runs["devinterp"]),
    }


def environment(bench_python: str) -> dict:
    import platform

    sys.path.insert(0, str(HERE))
    from speed import environment as env

    out = env()
    out["torch"], out["devinterp"] = devinterp_versions(bench_python) or ("?", "?")
    out["platform"] = platform.platform()
    try:
        mhz = [float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz")]
        out["mhz"] = float(np.median(mhz))
    except (OSError, ValueError):
        pass
    return out


SMALL_MODELS = ("tms", "grokking_mlp", "dln_1e4")  # targets: ≥ 20× on these, ≥ 2× on mlp_1m, ≥ 20× on the job
TARGETS = {**{m: 20.0 for m in SMALL_MODELS}, "mlp_1m": 2.0}


def _verdict(items: list[tuple[str, float, float]]) -> str:
    """'met for a (31×), ...; not for b (12×)' from (name, speed-up, target)."""
    met = [f"{n} ({x:.1f}× ≥ {t:g}×)" for n, x, t in items if x >= t]
    missed = [f"{n} ({x:.1f}× < {t:g}×)" for n, x, t in items if x < t]
    if not missed:
        return "met for every model: " + ", ".join(met)
    return "met for " + (", ".join(met) or "none") + "; not met for " + ", ".join(missed)


def render(rows: list[dict], job: dict | None, env: dict) -> str:

    threads = ", ".join(f"{r['model']} {r.get('devinterp_threads', '?')}" for r in rows)
    load = env.get("load_note") or f"load {env['load']:.1f}"
    devices = rows[0].get("slt_devices", 1) if rows else 1

    lines = [
        f"Machine: {env['cpu']}, {env['cores']} cores ({load}); CPU only "
        f"(no GPU in this session). slt {env.get('slt', '0.1.0')} on jax {env['jax']} (PRNG `{env['prng_impl']}`; XLA CPU code: {env.get('xla_cpu_options', 'XLA defaults')}); "
        f"devinterp {env['devinterp']} (the last release with the generic model + DataLoader API; 2.x takes only "
        f"language-model datasets) on torch {env['torch']} (threads chosen on the spot: {threads}; cores=1). Generated by "
        "`python bench/vs_devinterp.py --write`: fresh processes, interleaved, medians of repeats.",
        "",
        f"slt runs as its command line does: one XLA CPU device per core (`slt.use_cpu_cores()`, here {devices}), "
        "chains sharded across them (the same numbers as one device, up to float32 rounding). The \"one device\" columns are slt "
        "with `SLT_CPU_DEVICES=off`, the JAX default.",
        "",
        "| model | params | batch | chains × draws | devinterp chain-steps/s | slt chain-steps/s | speed-up | "
        "slt, one device | speed-up, one device | devinterp wall s | slt wall s (compile) | wall speed-up | "
        "λ̂ devinterp | λ̂ slt | agree |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['num_params']:,} | {r['batch_size']} | {r['num_chains']} × {r['num_draws']} | "
            f"{r['devinterp_chain_steps_per_s']:,.0f} | {r['slt_chain_steps_per_s']:,.0f} | **{r['speedup_chain_steps']:.1f}×** | "
            f"{r.get('slt_1dev_chain_steps_per_s', float('nan')):,.0f} | {r.get('speedup_chain_steps_1dev', float('nan')):.1f}× | "
            f"{r['devinterp_wall_s']:.2f} | {r['slt_wall_s']:.2f} ({r['slt_compile_s']:.2f}) | {r['speedup_wall']:.1f}× | "
            f"{r['devinterp_llc']:.3g} ± {r['devinterp_llc_se']:.2g} | {r['slt_llc']:.3g} ± {r['slt_llc_se']:.2g} | "
            f"{'yes' if r['agree'] else 'NO'} (z = {r['z']:.1f}) |"
        )
    verdict = _verdict([(r["model"], r["speedup_chain_steps"], TARGETS[r["model"]]) for r in rows if r["model"] in TARGETS])
    dln = next((r for r in rows if r["model"] == "dln_1e4"), None)
    if dln and env.get("cores"):
        # matmul FLOP of one step of the benchmark DLN (widths 25-60-60-60-25): forward and weight gradients
        # 2·batch·params each, input gradients 2·batch·(params of every layer but the first)
        flop = 2 * dln["batch_size"] * (3 * dln["num_params"] - 25 * 60)
        need = 20 * dln["devinterp_chain_steps_per_s"] * flop
        verdict += (f". The DLN is arithmetic-bound: its step is {flop / 1e6:.1f} MFLOP of matrix products per chain, "
                    f"slt runs at {dln['slt_chain_steps_per_s'] * flop / 1e9:.0f} GFLOP/s, and 20× devinterp would need "
                    f"{need / 1e9:.0f} GFLOP/s: at 32 float32 FLOP per cycle per core (two 8-lane FMA units), "
                    f"{env['cores']} cores would have to run at {need / (32 * env['cores']) / 1e9:.1f} GHz")
    lines += ["", f"chain-steps/s: steady-state sampling, the median of {WARM_ESTIMATES} more estimates in the process "
              "after the first (slt: compiled program cached, its sampling time; devinterp: the whole estimate, "
              "its first pays torch's warm-up). Wall: one "
              "whole estimate in a fresh process, slt including tracing and compilation (the persistent compilation cache off). ± is the standard error across chains (pooled over "
              "repeats); agree = |z| < 3. Neither side computes MALA acceptance checks here (slt's default 100 checks "
              "add one gradient per check).",
              "",
              f"Targets (chain-steps/s, ≥ 20× on the small models, ≥ 2× on the 1M-parameter MLP): {verdict}.",
              "",
              "Where the speed-up comes from, and where it stops: devinterp pays Python and PyTorch dispatch overhead "
              "per optimizer step and per parameter tensor, and runs chains one after another on one core (its "
              "multi-process mode loses the callbacks' results on CPU); slt runs every chain and step in one compiled "
              "program with a fused update, and with one device per core every core runs its own chains. On tiny "
              "models (TMS) devinterp's overhead is everything. As the model grows, both sides become bound by the "
              "CPU's floating-point throughput (the grokking MLP's step is ~3 MFLOP per chain, the DLN's ~30, the 1M "
              "MLP's ~1.6 GFLOP) and the speed-up shrinks towards the ratio of useful work per step times the cores "
              "slt uses; on the 1M-parameter MLP XLA's CPU matrix multiply is about as fast as PyTorch's oneDNN/MKL. "
              "Single estimates of small models are dominated by slt's compile time in a fresh process (the wall "
              "speed-up column); the `slt` CLI's persistent compilation cache removes the XLA part of it on a "
              "second run."]
    if job and job["devinterp"] and job["slt"]:
        med = lambda side, key: float(np.median([r[key] for r in job[side]]))  # noqa: E731
        d = med("devinterp", "wall_seconds")
        job_chains, job_draws = SETTINGS["grokking_mlp"]
        table = [("devinterp (one estimate per checkpoint)", d)]
        for side, label in (("slt", "one device per core"), ("slt_1dev", "one device")):
            if job.get(side):
                table += [(f"slt, {job[side][0]['method']} (compiled once), {label}", med(side, "wall_seconds")),
                          (f"slt, one program (checkpoints × chains, per-chain centers), {label}",
                           med(side, "one_program_wall_seconds"))]
        best = min(t for _, t in table[1:])  # the verdict is on cold runs; the warm cache is reported beside it
        warm = f"; {d / med(CACHED, 'wall_seconds'):.1f}× on a second run with the cache warm" if job.get(CACHED) else ""
        if job.get(CACHED):
            table.append((f"slt, {job[CACHED][0]['method']}, a second run with the persistent compilation cache warm "
                          "(what the `slt` CLI does), one device per core", med(CACHED, "wall_seconds")))
        lines += [
            "",
            f"Whole job: LLC at {job['checkpoints']} checkpoints of the grokking MLP (random-init checkpoints; "
            f"{job_chains} chains × {job_draws} draws each, fresh process, end to end, compilation included):",
            "",
            "| contender | wall s | speed-up vs devinterp |",
            "|---|---:|---:|",
            *[f"| {label} | {t:.1f} | {'1×' if i == 0 else f'**{d / t:.1f}×**'} |" for i, (label, t) in enumerate(table)],
            "",
            f"Target ≥ 20× end to end: {'met' if d / best >= 20 else 'not met'} (best {d / best:.1f}× in a fresh "
            f"process that compiles{warm}).",
        ]
        grok = next((r for r in rows if r["model"] == "grokking_mlp"), None)
        if grok and job.get("slt"):
            steps = job["checkpoints"] * job_chains * job_draws
            t = med("slt", "wall_seconds")
            lines[-1] += (f" Over the whole job slt runs {steps / t:,.0f} chain-steps/s, compilation and per-group "
                          f"setup included (its steady rate on one estimate: {grok['slt_chain_steps_per_s']:,.0f}), "
                          f"devinterp {steps / d:,.0f} (on one estimate: {grok['devinterp_chain_steps_per_s']:,.0f}): "
                          "both sides run at about their per-step rates, so the job's speed-up is the single "
                          f"estimate's, less slt's compilation and setup ({t - steps / grok['slt_chain_steps_per_s']:.1f} s "
                          f"of its {t:.1f} s).")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
