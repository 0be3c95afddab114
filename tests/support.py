"""Shared by the sampler-program tests: a small regression problem, its run, and a subprocess runner."""

import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np

from slt.posterior import Hyperparameters
from slt.sampling import RunConfig, run_chains

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loss(w, batch):
    return jnp.mean((batch["x"] @ w["a"] + w["b"] - batch["y"]) ** 2)


rng = np.random.default_rng(0)
X = rng.normal(size=(300, 4)).astype(np.float32)
DATA = {"x": X, "y": (X @ np.arange(1.0, 5.0) + 0.1 * rng.normal(size=300)).astype(np.float32)}
PARAMS = {"a": jnp.arange(1.0, 5.0), "b": jnp.zeros(())}
HP = Hyperparameters(np.array([1e-3, 2e-3, 1e-3, 3e-3]), 50.0, 1.0)


def run(data=DATA, **kw):
    """4 chains × 60 steps of SGLD on the regression (seed 3), acceptance checked every 10 steps."""
    config = kw.pop("config", RunConfig("sgld", 4, 60, 16, acceptance_every=10))
    return run_chains(loss, PARAMS, data, HP, config=config, seed=3, **kw)


def in_subprocess(script: str, env_extra: dict, timeout: int = 240) -> dict:
    """Run ``script`` in a fresh Python (for device counts and XLA flags) and return its last line as JSON."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", **env_extra)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
