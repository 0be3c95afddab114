"""SGLD against its floor: the bare jitted value_and_grad on the same minibatches.

The cost of an SGLD step cannot go below the cost of the minibatch gradient.
The floor here is the same program structure as :mod:`slt.sampling` (``lax.scan``
over steps × ``vmap`` over chains, the same per-chain key schedule and
minibatch gathering) doing only ``value_and_grad`` and a plain gradient step:
no noise, no localization, no bookkeeping. Both run interleaved in one
process, repeated (runs of about a second); medians of the paired ratios are reported, and compile time separately.

    python bench/speed.py                       # all models, print the table
    python bench/speed.py --write               # also write docs/benchmarks.md
    python bench/speed.py --compare-before DIR  # before/after: DIR holds an older `slt` package

The model definitions here (:func:`make_model`) are shared with
bench/vs_devinterp.py and bench/memory.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import write_section  # noqa: E402


# ----------------------------------------------------------------------------
# models (plain JAX; the torch twins live in bench/vs_devinterp.py)
# ----------------------------------------------------------------------------


@dataclass
class Model:
    name: str
    loss_fn: Callable
    params: Any
    data: dict
    batch_size: int
    step_size: float
    nbeta: float
    localization: float
    num_chains: int
    num_steps: int
    kind: str  # how the torch twin is built: "tms", "grokking", "dln", "mlp"
    meta: dict = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        return int(sum(np.size(x) for x in jax.tree.leaves(self.params)))

    @property
    def n(self) -> int:
        return int(jax.tree.leaves(self.data)[0].shape[0])


def tms_loss(params, batch):
    """Toy model of superposition: mean over examples of ‖x - ReLU(xWᵀW + b)‖²."""
    x = batch["x"]
    W, b = params["W"], params["b"]
    return jnp.mean(jnp.sum((x - jax.nn.relu((x @ W.T) @ W + b)) ** 2, axis=-1))


def dln_loss(params, batch):
    """Deep linear network, mean over examples of ‖y - x·W₁⋯W_L‖²."""
    h = batch["x"]
    for w in params["layers"]:
        h = h @ w
    return jnp.mean(jnp.sum((batch["y"] - h) ** 2, axis=-1))


def mlp_loss(params, batch):
    """ReLU MLP (kernels [in, out]) with softmax cross-entropy."""
    h = batch["x"]
    layers = params["layers"]
    for i, layer in enumerate(layers):
        h = h @ layer["kernel"] + layer["bias"]
        if i + 1 < len(layers):
            h = jax.nn.relu(h)
    logp = jax.nn.log_softmax(h)
    return -jnp.mean(jnp.take_along_axis(logp, batch["y"][:, None], axis=1))


def grokking_mlp_params(p: int, embed: int, hidden: int, key) -> dict:
    ks = jax.random.split(key, 6)
    u = lambda k, shape, fan: jax.random.uniform(k, shape, jnp.float32, -1 / math.sqrt(fan), 1 / math.sqrt(fan))  # noqa: E731
    return {
        "embed": {"embedding": jax.random.normal(ks[0], (p, embed))},
        "left": {"kernel": u(ks[1], (embed, hidden), embed), "bias": u(ks[2], (hidden,), embed)},
        "right": {"kernel": u(ks[3], (embed, hidden), embed), "bias": u(ks[4], (hidden,), embed)},
        "out": {"kernel": u(ks[5], (hidden, p), hidden)},
    }


def grokking_loss(params, batch):
    """logits = W_out·GELU(L(E[a]) + R(E[b])), cross-entropy (REFERENCE.md §5)."""
    e = params["embed"]["embedding"]
    a, b = e[batch["x"][:, 0]], e[batch["x"][:, 1]]
    h = a @ params["left"]["kernel"] + params["left"]["bias"] + b @ params["right"]["kernel"] + params["right"]["bias"]
    logits = 0.5 * h * (1 + jax.lax.erf(h / math.sqrt(2))) @ params["out"]["kernel"]  # exact GELU, as slt.models.modular.gelu_exact
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, batch["y"][:, None], axis=1))


def grokking_task(seed: int = 0, train_frac: float = 0.5):
    """(loss_fn, params, data, source): ``slt.models.modular`` when present, else the definition above."""
    try:
        from slt.models.modular import make_modular_task

        task = make_modular_task("mlp", p=53, train_frac=train_frac, seed=seed)
        params = task.params
        # its pure-dict params have the same names: embed.embedding, left/right.kernel/bias, out.kernel
        return task.loss_fn, params, {k: np.asarray(v) for k, v in task.train_data.items()}, "slt.models.modular"
    except ImportError:
        p = 53
        a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
        x = np.stack([a.ravel(), b.ravel()], 1).astype(np.int32)
        y = ((x[:, 0] + x[:, 1]) % p).astype(np.int32)
        perm = np.random.default_rng(seed).permutation(p * p)[: int(round(train_frac * p * p))]
        params = grokking_mlp_params(p, 12, 48, jax.random.key(seed))
        return grokking_loss, params, {"x": x[perm], "y": y[perm]}, "bench/speed.py"


def make_model(name: str, *, num_chains: int = 4, num_steps: int | None = None, batch_size: int | None = None) -> Model:
    """The benchmark models: "tms", "grokking_mlp", "dln_1e4", "mlp_1m" (and "mlp_small")."""
    rng = np.random.default_rng(0)
    if name == "tms":
        c, n = 6, 1000
        idx = rng.integers(0, c, n)
        x = np.zeros((n, c), np.float32)
        x[np.arange(n), idx] = rng.uniform(0, 1, n)
        try:  # the 5-gon critical point (REFERENCE.md §4)
            from slt.models.tms import kgon_params

            params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), dict(kgon_params(c, 5)))
        except ImportError:
            ang = 2 * np.pi * np.arange(5) / 5
            W = np.zeros((2, c), np.float32)
            W[:, :5] = 1.17 * np.stack([np.cos(ang), np.sin(ang)])
            params = {"W": jnp.asarray(W), "b": jnp.asarray(np.r_[np.full(5, -0.2), np.full(c - 5, -0.5)].astype(np.float32))}
        return Model(name, tms_loss, params, {"x": x}, batch_size or n, 1e-3, n / math.log(n), 1.0,
                     num_chains, num_steps or 500, "tms", {"c": c})
    if name == "grokking_mlp":
        loss_fn, params, data, source = grokking_task()
        return Model(name, loss_fn, params, data, batch_size or 128, 3e-3, 2.0, 5.0, num_chains, num_steps or 500,
                     "grokking", {"source": source})
    if name == "dln_1e4":
        widths, rank, n = [25, 60, 60, 60, 25], 10, 100_000
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            P = rng.standard_normal((a, rank)) / np.sqrt(a)
            Q = rng.standard_normal((b, rank)) / np.sqrt(rank)
            layers.append((P @ Q.T).astype(np.float32))
        x = rng.uniform(-10, 10, (n, widths[0])).astype(np.float32)
        y = x
        for w in layers:
            y = y @ w
        params = {"layers": [jnp.asarray(w) for w in layers]}
        return Model(name, dln_loss, params, {"x": x, "y": y.astype(np.float32)}, batch_size or 500, 5e-9,
                     n / math.log(n), 1.0, num_chains, num_steps or 1000, "dln", {"widths": widths, "rank": rank})
    if name in ("mlp_1m", "mlp_small"):
        widths = [784, 1024, 256, 10] if name == "mlp_1m" else [64, 128, 128, 10]
        n = 10_000
        x = rng.standard_normal((n, widths[0])).astype(np.float32)
        teacher = rng.standard_normal((widths[0], widths[-1])).astype(np.float32)
        y = np.argmax(x @ teacher, axis=1).astype(np.int32)
        params = _trained_mlp(widths, x, y)
        return Model(name, mlp_loss, params, {"x": x, "y": y}, batch_size or 256, 1e-5 if name == "mlp_1m" else 1e-4,
                     n / math.log(n), 100.0, num_chains, num_steps or (50 if name == "mlp_1m" else 500), "mlp",
                     {"widths": widths})
    raise ValueError(f"unknown model {name!r}")


def _trained_mlp(widths, x, y, steps: int = 300, lr: float = 1e-3):
    """A briefly trained MLP (Adam, batch 256): a point near a minimum to measure."""
    import optax

    key = jax.random.key(1)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        key, k = jax.random.split(key)
        layers.append({"kernel": jax.random.normal(k, (a, b)) * np.sqrt(2.0 / a), "bias": jnp.zeros(b)})
    params = {"layers": layers}
    opt = optax.adam(lr)
    state = opt.init(params)

    @jax.jit
    def train(params, state, x, y):
        def body(carry, i):
            params, state = carry
            idx = jax.random.randint(jax.random.fold_in(jax.random.key(2), i), (256,), 0, x.shape[0])
            g = jax.grad(mlp_loss)(params, {"x": x[idx], "y": y[idx]})
            upd, state = opt.update(g, state)
            return (optax.apply_updates(params, upd), state), None

        return jax.lax.scan(body, (params, state), jnp.arange(steps))[0]

    params, _ = train(params, state, jnp.asarray(x), jnp.asarray(y))
    return jax.tree.map(np.asarray, params)


# ----------------------------------------------------------------------------
# the floor: same structure, only value_and_grad + a gradient step
# ----------------------------------------------------------------------------


def floor_program(model: Model):
    """Compiled ``(params [chains], raw keys, nβ) -> losses [chains, steps]`` and its compile seconds."""
    import slt.sampling as sampling

    impl = getattr(sampling, "DEFAULT_PRNG_IMPL", "threefry2x32")
    partitionable = getattr(sampling, "THREEFRY_PARTITIONABLE", True)
    resolve = getattr(sampling, "resolve_impl", lambda name: name)
    data = jax.tree.map(jnp.asarray, model.data)
    n, batch_size, lr = model.n, model.batch_size, 0.5 * model.step_size
    grad = jax.value_and_grad(model.loss_fn)

    def chain_step(w, key, step, nbeta):
        k_batch, _ = jax.random.split(jax.random.fold_in(key, step))  # the runner's key schedule
        if batch_size >= n:
            batch = data
        else:
            idx = jax.random.randint(k_batch, (batch_size,), 0, n)
            batch = jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)
        loss, g = grad(w, batch)
        return jax.tree.map(lambda w, g: w - lr * nbeta * g, w, g), loss

    def run(params, raw_keys, nbeta):
        keys = jax.vmap(lambda k: jax.random.wrap_key_data(k, impl=resolve(impl)))(raw_keys)

        def body(ws, step):
            return jax.vmap(chain_step, in_axes=(0, 0, None, None))(ws, keys, step, nbeta)

        _, losses = jax.lax.scan(body, params, jnp.arange(model.num_steps, dtype=jnp.int32))
        return losses.T

    params = jax.tree.map(lambda x: jnp.broadcast_to(x, (model.num_chains,) + x.shape), model.params)
    raw = jax.random.key_data(jax.random.split(jax.random.key(0, impl=resolve(impl)), model.num_chains))
    args = (params, raw, jnp.float32(model.nbeta))
    try:  # the same XLA code generation as slt's own programs (512-bit vectors on AMD AVX-512 CPUs)
        from slt.cpu import cpu_compiler_options

        options = cpu_compiler_options(jax.default_backend())
    except ImportError:  # an older slt (--compare-before)
        options = {}
    try:
        from slt.cpu import compile_lowered
    except ImportError:  # an slt that passed its options straight to compile
        def compile_lowered(lowered, options):
            return lowered.compile(compiler_options=options or None)
    t0 = time.perf_counter()
    with jax.threefry_partitionable(partitionable):
        compiled = compile_lowered(jax.jit(run).lower(*args), options)
    return (lambda: compiled(*args)), time.perf_counter() - t0


def sgld_program(model: Model, acceptance_every: int = 0, prng_impl: str | None = None):
    """A zero-argument callable running ``slt.sampling.run_chains`` (timing: its sample_seconds) and its compile seconds."""
    from slt.posterior import Hyperparameters
    from slt.sampling import RunConfig, run_chains

    extra = {"prng_impl": prng_impl} if prng_impl else {}
    config = RunConfig("sgld", model.num_chains, model.num_steps, model.batch_size, acceptance_every=acceptance_every,
                       **extra)
    hp = Hyperparameters(model.step_size, model.nbeta, model.localization)
    data = jax.tree.map(jnp.asarray, model.data)

    def call():
        return run_chains(model.loss_fn, model.params, data, hp, config=config, seed=0)

    first = call()
    return call, first.compile_seconds


def timed(fn) -> float:
    """Seconds of one call (for run_chains results: the sampling time without Python setup)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    wall = time.perf_counter() - t0
    return getattr(out, "sample_seconds", wall)


#: steps per timed run of the floor comparison, so that each run takes about a second on 2 cores
FLOOR_STEPS = {"tms": 4000, "grokking_mlp": 2000, "dln_1e4": 1000, "mlp_small": 2000, "mlp_1m": 50}


def bench_model(name: str, repeats: int, impls: tuple = (), **kwargs) -> dict:
    if name == "mlp_1m":  # 2 chains × 50 steps: 160 GFLOP per run already
        kwargs["num_chains"] = min(kwargs.get("num_chains") or 4, 2)
    if kwargs.get("num_steps") is None:  # runs of about a second: quarter-second runs scattered the ratios by ±0.3
        kwargs["num_steps"] = FLOOR_STEPS.get(name)
    model = make_model(name, **kwargs)
    floor, floor_compile = floor_program(model)
    contenders = {"floor": floor}
    compile_s = {"floor": floor_compile}
    every = max(1, model.num_steps // 100)
    contenders["sgld"], compile_s["sgld"] = sgld_program(model, 0)
    contenders["sgld+acc"], compile_s["sgld+acc"] = sgld_program(model, every)
    for impl in impls:
        contenders[f"sgld[{impl}]"], compile_s[f"sgld[{impl}]"] = sgld_program(model, 0, impl)
    timed(floor)
    times = {k: [] for k in contenders}
    for _ in range(repeats):  # interleaved
        for k, fn in contenders.items():
            times[k].append(timed(fn))
    med = {k: float(np.median(v)) for k, v in times.items()}
    # ratios: median over repeats of each repeat's own ratio (the contenders of a repeat run back to back,
    # so a slow drift in the machine's load cancels)
    per_repeat = {k: np.asarray(v) / np.asarray(times["floor"]) for k, v in times.items()}
    paired = {k: float(np.median(r)) for k, r in per_repeat.items()}
    chain_steps = model.num_chains * model.num_steps
    return {
        "model": name,
        "num_params": model.num_params,
        "batch_size": model.batch_size,
        "num_chains": model.num_chains,
        "num_steps": model.num_steps,
        "median_seconds": med,
        "chain_steps_per_s": {k: chain_steps / v for k, v in med.items()},
        "ratio_sgld": paired["sgld"],
        "ratio_sgld_acc": paired["sgld+acc"],
        "ratios": paired,
        "ratios_per_repeat": per_repeat["sgld"].tolist(),
        "compile_seconds": compile_s,
        "acceptance_every": every,
    }


def sharding_speedup(name: str, chains: int, repeats: int) -> dict:
    """In a process with several devices: the same run on 1 device and sharded (the default devices), interleaved."""
    from slt.posterior import Hyperparameters
    from slt.sampling import RunConfig, run_chains

    model = make_model(name, num_chains=chains)
    config = RunConfig("sgld", chains, model.num_steps, model.batch_size)
    hp = Hyperparameters(model.step_size, model.nbeta, model.localization)
    data = jax.tree.map(jnp.asarray, model.data)
    calls = {d: (lambda d=d: run_chains(model.loss_fn, model.params, data, hp, config=config, seed=0, devices=d))
             for d in (1, None)}  # None: the most devices whose number divides the chains (the default)
    last = {d: c() for d, c in calls.items()}  # compiles
    compile_s = {str(d): r.compile_seconds for d, r in last.items()}
    times = {d: [] for d in calls}
    for _ in range(repeats):
        for d, c in calls.items():
            last[d] = c()
            times[d].append(last[d].sample_seconds)
    one, two = float(np.median(times[1])), float(np.median(times[None]))
    return {"model": name, "chains": chains, "num_steps": model.num_steps, "devices": last[None].extras["num_devices"],
            "one_device_s": one, "two_devices_s": two, "speedup": one / two, "compile_seconds": compile_s,
            **_trace_difference(last[1].loss_trace, last[None].loss_trace)}


def vector_width_speedup(name: str, chains: int, repeats: int) -> dict:
    """The same SGLD run compiled with XLA's default vector width and with 512 bits (``SLT_CPU_VECTOR_WIDTH``),
    interleaved, on the default devices."""
    from slt.posterior import Hyperparameters
    from slt.sampling import RunConfig, run_chains

    model = make_model(name, num_chains=chains, num_steps=FLOOR_STEPS.get(name))  # runs of about a second
    config = RunConfig("sgld", chains, model.num_steps, model.batch_size)
    hp = Hyperparameters(model.step_size, model.nbeta, model.localization)
    data = jax.tree.map(jnp.asarray, model.data)

    def call(width):
        os.environ["SLT_CPU_VECTOR_WIDTH"] = width  # read when the program compiles; cached per setting
        return run_chains(model.loss_fn, model.params, data, hp, config=config, seed=0)

    widths = ("xla", "512")
    last = {w: call(w) for w in widths}  # compiles
    times = {w: [] for w in widths}
    for _ in range(repeats):
        for w in widths:
            last[w] = call(w)
            times[w].append(last[w].sample_seconds)
    ratios = np.asarray(times["xla"]) / np.asarray(times["512"])
    return {"model": name, "chains": chains, "num_steps": model.num_steps, "devices": last["512"].extras["num_devices"],
            "xla_s": float(np.median(times["xla"])), "w512_s": float(np.median(times["512"])),
            "speedup": float(np.median(ratios)), **_trace_difference(last["xla"].loss_trace, last["512"].loss_trace)}


def in_subprocess(function: str, name: str, chains: int, repeats: int, cpu_devices: int | None = None) -> dict:
    """``speed.<function>(name, chains, repeats)`` in a fresh process given ``cpu_devices`` CPU devices (default one per core)."""
    script = ("import json, slt, sys; slt.use_cpu_cores(%r); sys.path.insert(0, %r); import speed; "
              "print(json.dumps(speed.%s(%r, %d, %d)))"
              % (cpu_devices, str(Path(__file__).parent), function, name, chains, repeats))
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                         env=dict(os.environ, SLT_COMPILATION_CACHE="off"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def sharding_in_subprocess(name: str, chains: int, repeats: int, cpu_devices: int | None = None) -> dict:
    """:func:`sharding_speedup` in a fresh process given ``cpu_devices`` CPU devices (default one per core)."""
    return in_subprocess("sharding_speedup", name, chains, repeats, cpu_devices)


def _equality(row: dict) -> str:
    return "bitwise equal" if row["equal"] else f"max rel. diff {row['max_rel_diff']:.1g}"


def _trace_difference(a, b) -> dict:
    """Bitwise equality, and the largest relative difference (float rounding when the matmul blocking differs)."""
    return {"equal": bool(np.array_equal(a, b)), "max_rel_diff": float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-30)))}


def cpu_cores_main(names: list[str], args) -> int:
    """Per model, in a fresh process with one CPU device per core: the same SGLD run on one device and on all."""
    rows = []
    for name in names:
        row = sharding_in_subprocess(name, args.chains, args.repeats)
        row["chain_steps"] = row["chains"] * row["num_steps"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    env = environment()
    lines = [
        f"One CPU device per core (`slt.use_cpu_cores()`, what the `slt` command line does) against JAX's default "
        f"single CPU device: the same SGLD run ({args.chains} chains, no MALA checks), interleaved repeats in one "
        f"process, medians. Machine: {env['cpu']}, {env['cores']} cores, load {env['load']:.1f}; jax {env['jax']}. "
        "Generated by `python bench/speed.py --cpu-cores --write`.",
        "",
        "| model | chains × steps | devices | one device chain-steps/s | one per core chain-steps/s | speed-up | loss traces |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['chains']} × {r['chain_steps'] // r['chains']} | {r['devices']} | "
                     f"{r['chain_steps'] / r['one_device_s']:,.0f} | {r['chain_steps'] / r['two_devices_s']:,.0f} | "
                     f"**{r['speedup']:.2f}×** | {_equality(r)} |")
    lines += ["", "Loss traces: sharding changes only how XLA blocks the matrix products, so traces are bitwise equal "
              "or differ by float32 rounding (~1e-7 relative), which does not move λ̂."]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("benchmarks.md", "speed-cpu-cores", text)
    return 0


def environment() -> dict:
    import slt.sampling as sampling

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "python": platform.python_version(),
        "prng_impl": getattr(sampling, "DEFAULT_PRNG_IMPL", "threefry2x32"),
        "load": os.getloadavg()[0],
        "xla_cpu_options": _xla_cpu_options(),
    }


def _xla_cpu_options() -> str:
    """slt's XLA options for CPU programs, as the tables print them ("XLA defaults" when none)."""
    try:
        from slt.cpu import cpu_compiler_options
    except ImportError:
        return "XLA defaults"
    options = cpu_compiler_options(jax.default_backend())  # the options in force (none refused by this XLA)
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "XLA defaults"


def table(rows: list[dict], before: list[dict] | None = None) -> str:
    lines = [
        "| model | params | batch | chains × steps | floor chain-steps/s | SGLD chain-steps/s | SGLD / floor | "
        "SGLD + 1% MALA checks / floor | SGLD with threefry noise / floor | compile s (floor / SGLD) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        tf = r.get("ratios", {}).get("sgld[threefry2x32]")
        lines.append(
            f"| {r['model']} | {r['num_params']:,} | {r['batch_size']} | {r['num_chains']} × {r['num_steps']} | "
            f"{r['chain_steps_per_s']['floor']:,.0f} | {r['chain_steps_per_s']['sgld']:,.0f} | "
            f"**{r['ratio_sgld']:.2f}×** | {r['ratio_sgld_acc']:.2f}× | {'' if tf is None else f'{tf:.2f}×'} | "
            f"{r['compile_seconds']['floor']:.2f} / {r['compile_seconds']['sgld']:.2f} |"
        )
    if before:
        lines += ["", "Before → after this work (SGLD / floor and SGLD + 1% MALA checks / floor; the old runner against "
                  "its own floor, the new against its own, separate processes back to back on the same machine):", "",
                  "| model | before: SGLD / floor | after | before: + checks | after: + checks |", "|---|---:|---:|---:|---:|"]
        for b in before["before"]:
            a = next((r for r in (before.get("after") or rows) if r["model"] == b["model"]), None)
            if a:
                lines.append(f"| {b['model']} | {b['ratio_sgld']:.2f}× | {a['ratio_sgld']:.2f}× | "
                             f"{b['ratio_sgld_acc']:.2f}× | {a['ratio_sgld_acc']:.2f}× |")
    return "\n".join(lines)


def vector_width_main(names: list[str], args) -> int:
    """Per model, in a fresh process with one CPU device per core (as the CLI): XLA's vector width against 512 bits."""
    from slt.cpu import cpu_identity

    if "avx512f" not in cpu_identity()[1]:
        print("--vector-width: this CPU has no AVX-512, so 512-bit code is XLA's default code; nothing to measure")
        return 2
    rows = []
    for name in names:
        row = in_subprocess("vector_width_speedup", name, args.chains, args.repeats)
        row["chain_steps"] = row["chains"] * row["num_steps"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    env = environment()
    lines = [
        "XLA's CPU code with 512-bit vectors (`SLT_CPU_VECTOR_WIDTH=512`, slt's default on AMD CPUs with AVX-512) "
        "against XLA's default width (`SLT_CPU_VECTOR_WIDTH=xla`): the same SGLD run, one CPU device per core as the "
        f"`slt` command line, {args.chains} chains, no MALA checks, interleaved repeats in one process, medians of paired "
        f"ratios. Machine: {env['cpu']}, {env['cores']} cores, load {env['load']:.1f}; jax {env['jax']}. Generated by "
        "`python bench/speed.py --vector-width --write`.",
        "",
        "| model | chains × steps | devices | XLA default chain-steps/s | 512-bit chain-steps/s | speed-up | loss traces |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['chains']} × {r['num_steps']} | {r['devices']} | "
                     f"{r['chain_steps'] / r['xla_s']:,.0f} | {r['chain_steps'] / r['w512_s']:,.0f} | "
                     f"**{r['speedup']:.2f}×** | {_equality(r)} |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("benchmarks.md", "speed-vector-width", text)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tms,grokking_mlp,dln_1e4,mlp_small,mlp_1m")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--impls", default="", help="also time SGLD with these PRNG implementations (comma-separated)")
    ap.add_argument("--batch", type=int, default=None, help="override every model's batch size")
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    ap.add_argument("--compare-before", metavar="DIR", help="also run an older slt (DIR/slt) in alternating processes")
    ap.add_argument("--rounds", type=int, default=3, help="alternating before/after processes with --compare-before")
    ap.add_argument("--before-json", help="a --compare-before --json result to add to the table")
    ap.add_argument("--render", metavar="JSON", help="only render (and with --write, write) a saved --json result")
    ap.add_argument("--sharding-json", help="a --sharding --json result to mention under the table")
    ap.add_argument("--sharding", metavar="MODEL", help="measure the 2-device speed-up on MODEL (2 CPU devices on the same cores)")
    ap.add_argument("--cpu-cores", action="store_true",
                    help="SGLD on one device vs one device per core (slt.use_cpu_cores) for --models; --write adds the table")
    ap.add_argument("--vector-width", action="store_true",
                    help="SGLD compiled with XLA's default vector width vs 512 bits for --models; --write adds the table")
    args = ap.parse_args(argv)
    names = args.models.split(",")
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        _emit(saved["rows"], saved.get("before"), saved["env"], args)
        return 0

    if args.cpu_cores:
        return cpu_cores_main(names, args)
    if args.vector_width:
        return vector_width_main(names, args)

    if args.sharding:
        res = sharding_in_subprocess(args.sharding, args.chains, args.repeats, cpu_devices=2)
        print(json.dumps(res))
        if args.json:
            Path(args.json).write_text(json.dumps(res))
        return 0

    if args.compare_before:
        runs = {"before": [], "after": []}
        for _ in range(args.rounds):
            for label in ("before", "after"):
                env = dict(os.environ)
                if label == "before":
                    env["PYTHONPATH"] = str(Path(args.compare_before).resolve())
                out = Path(f"/tmp/slt-speed-{label}.json")
                cmd = [sys.executable, __file__, "--models", args.models, "--repeats", str(args.repeats),
                       "--chains", str(args.chains), "--json", str(out)]
                subprocess.run(cmd, check=True, env=env, cwd="/tmp")  # an slt without slt.cpu's options
                # compiles its floor with XLA's defaults: the before and after floors can differ in code generation
                runs[label].append(json.loads(out.read_text())["rows"])
        merged = {}
        for label, rounds in runs.items():
            merged[label] = []
            for i, name in enumerate(names):
                rows = [r[i] for r in rounds]
                best = dict(rows[0])
                best["ratio_sgld"] = float(np.median([r["ratio_sgld"] for r in rows]))
                best["ratio_sgld_acc"] = float(np.median([r["ratio_sgld_acc"] for r in rows]))
                merged[label].append(best)
        rows, before = merged["after"], merged
    else:
        rows, before = [], None
        for name in names:
            r = bench_model(name, args.repeats, tuple(i for i in args.impls.split(",") if i),
                            num_chains=args.chains, batch_size=args.batch)
            rows.append(r)
            print(f"{name:14s} params {r['num_params']:>9,}  floor {r['chain_steps_per_s']['floor']:>10,.0f}  "
                  f"sgld {r['chain_steps_per_s']['sgld']:>10,.0f} chain-steps/s  sgld/floor {r['ratio_sgld']:.3f}  "
                  f"(+acc {r['ratio_sgld_acc']:.3f})  ratios {json.dumps({k: round(v, 3) for k, v in r['ratios'].items()})}  "
                  f"compile {json.dumps({k: round(v, 2) for k, v in r['compile_seconds'].items()})}", flush=True)
    if args.before_json:
        before = json.loads(Path(args.before_json).read_text())["before"]
    env = environment()
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "rows": rows, "before": before}, indent=1))
    _emit(rows, before, env, args)
    return 0


def _emit(rows, before, env, args) -> None:
    text = table(rows, before)
    met = [r["model"] for r in rows if r["ratio_sgld"] <= 1.2]
    missed = [f"{r['model']} ({r['ratio_sgld']:.2f}×)" for r in rows if r["ratio_sgld"] > 1.2]
    text += (
        "\n\nTarget SGLD ≤ 1.2× the floor: met for " + (", ".join(met) or "none") + "; not for "
        + (", ".join(missed) or "none") + ". Repeats on this shared machine scatter by about ±0.1 in these ratios. "
        "What SGLD does beyond the floor: one Gaussian value per parameter per chain-step (bits from the counter "
        "hash, then the inverse-erf transform of slt.samplers.noise.standard_normal, the larger part), the "
        "localization term γ(w - w*), "
        "and the per-chain ε/nβ/γ and divergence bookkeeping. The threefry column is the same new runner with "
        "JAX's default generator: the noise alone cost up to half a gradient there. The MALA-check column has "
        "a check every 1% of the steps (estimate_llc's default of 100 checks on these short runs: every 20th to 40th step "
        "for 2000 to 4000 steps, every step for the 50-step 1M run), each one extra gradient."
    )
    if getattr(args, "sharding_json", None):
        sh = json.loads(Path(args.sharding_json).read_text())
        text += (f"\n\nChains sharded over 2 forced host devices (`--sharding {sh['model']}`, {sh['chains']} chains, the same "
                 f"2 cores): {sh['one_device_s']:.2f} s on one device, {sh['two_devices_s']:.2f} s on two, speed-up "
                 f"**{sh['speedup']:.2f}×**; loss traces bitwise identical: {sh['equal']}.")
    print(text)
    if args.write:
        note = (
            f"Machine: {env['cpu']}, {env['cores']} cores (CPU backend, shared with other jobs: load "
            f"{env['load']:.1f}); jax {env['jax']}, Python {env['python']}; PRNG `{env['prng_impl']}`; XLA CPU code: {env.get('xla_cpu_options', 'XLA defaults')} (floor and SGLD alike). "
            "Generated by `python bench/speed.py --write`. The floor is the same scan × vmap program with "
            "the same minibatch gathering doing only `value_and_grad` and a gradient step. Each timed run lasts "
            "about a second; rates are medians of interleaved repeats in one process, ratios the median of each "
            "repeat's own ratio; compile time is reported separately and not "
            "included in the rates. No GPU was available for these measurements."
        )
        write_section("benchmarks.md", "speed", note + "\n\n" + text)


if __name__ == "__main__":
    sys.exit(main())
