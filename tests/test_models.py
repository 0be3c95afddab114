"""Model organisms: DLN, TMS, modular arithmetic, and the training loop."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from slt.models.dln import DLN, make_dln_task, product, to_theory_widths
from slt.models.modular import ModularTransformer, gelu_exact, make_modular_task, modular_data
from slt.models.tms import kgon_params, make_tms_task, population_loss, tms_data, tms_loss
from slt.models.train import coupled_adam, linear_steps, log_steps, train


def _norm(tree):
    return float(jnp.sqrt(sum(jnp.sum(x.astype(jnp.float32) ** 2) for x in jax.tree_util.tree_leaves(tree))))


# ----------------------------------------------------------------- DLN


def _rank(m):
    """Numerical rank of a float32 matrix: singular values above 1e-5 of the largest."""
    sv = np.linalg.svd(np.asarray(m, np.float64), compute_uv=False)
    return 0 if sv.max() == 0 else int((sv > 1e-5 * sv.max()).sum())


@pytest.mark.parametrize("widths,rank", [([5, 10, 3, 8], 2), ([6, 6, 6], 6), ([4, 7, 4], 0)])
def test_dln_true_params(widths, rank):
    task = make_dln_task(widths, rank, n=2000, seed=1)
    loss_and_grad = jax.jit(jax.value_and_grad(task.loss_fn))
    loss, grad = loss_and_grad(task.params, task.data)
    assert float(loss) <= 1e-8 * float(jnp.mean(task.data["y"] ** 2) + 1)
    assert _norm(grad) < 1e-3
    kernels = [task.params["layers"][i]["kernel"] for i in range(len(widths) - 1)]
    assert [k.shape for k in kernels] == list(zip(widths[:-1], widths[1:]))
    assert _rank(product(task.params)) == rank
    assert all(_rank(k) == rank for k in kernels)  # every factor rank r: the most singular true parameter
    assert task.data["x"].shape == (2000, widths[0]) and task.data["y"].shape == (2000, widths[-1])
    assert float(jnp.abs(task.data["x"]).max()) <= 10.0
    assert task.meta["theory_widths"] == widths[::-1]
    # The module forward is x @ W1 @ W2 ...; the loss moves off the true parameter.
    forward = jax.jit(lambda p, x: nnx.merge(task.meta["graphdef"], p)(x))
    x3 = task.data["x"][:3]
    np.testing.assert_allclose(forward(task.params, x3), x3 @ product(task.params), rtol=1e-4, atol=1e-4)
    moved = jax.tree_util.tree_map(lambda w: w + 0.05, task.params)
    assert float(loss_and_grad(moved, task.data)[0]) > 1e-4


def test_dln_one_layer_construction():
    widths, rank = [6, 8, 7, 5], 2
    task = make_dln_task(widths, rank, n=500, seed=3, construction="one_layer")
    kernels = [np.asarray(task.params["layers"][i]["kernel"]) for i in range(len(widths) - 1)]
    reduced = [i for i, k in enumerate(kernels) if _rank(k) < min(k.shape)]
    assert len(reduced) == 1 and _rank(kernels[reduced[0]]) == rank  # one layer rank r, the others full rank
    assert _rank(product(task.params)) == rank
    assert float(task.loss_fn(task.params, task.data)) <= 1e-8 * float(jnp.mean(task.data["y"] ** 2) + 1)
    assert task.meta["construction"] == "one_layer"
    with pytest.raises(ValueError, match="construction"):
        make_dln_task(widths, rank, n=10, construction="random")


def test_dln_theory_lambda():
    from slt import theory

    assert to_theory_widths([1, 2, 3]) == [3, 2, 1]
    task = make_dln_task([5, 3, 5], 0, n=10, seed=0)
    assert task.meta["lam"] == 6.5 and task.meta["multiplicity"] == 2  # M+H+N odd: +1/8, m=2
    task = make_dln_task([3, 5, 6, 4], 1, n=10, seed=0)  # output->input [4, 6, 5, 3], r=1 -> 6, m=2
    assert task.meta["lam"] == float(theory.dln([4, 6, 5, 3], 1).lam) == 6.0
    assert task.meta["num_params"] == 3 * 5 + 5 * 6 + 6 * 4
    assert isinstance(DLN([2, 3], rngs=nnx.Rngs(0))(jnp.ones((4, 2))), jax.Array)


# ----------------------------------------------------------------- TMS


_pop_value_and_grad = jax.jit(jax.value_and_grad(population_loss))


@pytest.mark.parametrize("k,plus,expected", [(5, False, 0.06874), (5, True, 0.06180), (6, False, 0.04819)])
def test_tms_kgon_critical_points(k, plus, expected):
    params = kgon_params(6, k, plus=plus)
    loss, grad = _pop_value_and_grad(params)
    assert abs(float(loss) - expected) < 1e-4
    assert _norm(grad) < 1e-5
    W = np.asarray(params["W"])
    norms = np.linalg.norm(W, axis=0)
    np.testing.assert_allclose(norms[:k], norms[0], rtol=1e-6)
    assert np.all(norms[k:] == 0)


def test_tms_population_loss_matches_monte_carlo():
    W = np.random.default_rng(3).standard_normal((2, 5)).astype(np.float32)
    params = {"W": jnp.asarray(W), "b": jnp.array([0.3, -0.2, 0.0, 0.1, -0.5])}
    data = tms_data(5, 100_000, 4)
    x = np.asarray(data["x"])
    assert np.all((x > 0).sum(1) <= 1) and x.max() <= 1.0 and x.min() >= 0.0
    pop, g_pop = _pop_value_and_grad(params)
    mc, g_mc = jax.jit(jax.value_and_grad(tms_loss))(params, data)
    assert abs(float(mc) - float(pop)) < 0.01 * float(pop)
    # The exact gradient agrees with the Monte-Carlo one.
    assert _norm(jax.tree_util.tree_map(jnp.subtract, g_pop, g_mc)) < 0.05 * _norm(g_pop)


def test_tms_task():
    task = make_tms_task(6, n=500, seed=0, init="5+")
    assert task.data["x"].shape == (500, 6) and task.params["W"].shape == (2, 6)
    assert task.meta["lam"] == 8.5 and abs(task.meta["population_loss"] - 0.06180) < 1e-4
    assert make_tms_task(6, n=10, init=6).meta["lam"] == 8.5
    assert make_tms_task(6, n=10, init=5).meta["lam"] == 7.0
    rand = make_tms_task(6, n=10, seed=1)
    assert np.isfinite(rand.meta["population_loss"]) and rand.params["W"].shape == (2, 6)


# ----------------------------------------------------------------- modular arithmetic


def test_modular_data():
    train_d, test_d = modular_data(11, 0.4, seed=0)
    assert train_d["x"].shape == (48, 2) and test_d["x"].shape == (121 - 48, 2)
    for d in (train_d, test_d):
        np.testing.assert_array_equal(d["y"], (d["x"][:, 0] + d["x"][:, 1]) % 11)
    pairs = {tuple(map(int, r)) for r in np.concatenate([train_d["x"], test_d["x"]])}
    assert len(pairs) == 121
    other, _ = modular_data(11, 0.4, seed=1)
    assert not np.array_equal(other["x"], train_d["x"])
    eq, _ = modular_data(11, 0.4, seed=0, with_eq=True)
    assert eq["x"].shape == (48, 3) and np.all(eq["x"][:, 2] == 11)
    np.testing.assert_array_equal(eq["x"][:, :2], train_d["x"])


def test_gelu_exact_matches_float64_erf():
    """x·Φ(x) in float32 against float64 math.erf: float32 rounding only, unlike the tanh approximation."""
    import math

    x = np.linspace(-10.0, 10.0, 4001)
    exact = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])
    got = np.asarray(gelu_exact(jnp.asarray(x, jnp.float32)), np.float64)
    assert np.abs(got - exact).max() < 2e-6
    tanh_approx = np.asarray(jax.nn.gelu(jnp.asarray(x, jnp.float32), approximate=True), np.float64)
    assert np.abs(tanh_approx - exact).max() > 1e-4  # the check can tell the approximation from the exact form


@pytest.mark.slow
def test_modular_mlp_task():
    task = make_modular_task("mlp", p=53, seed=0)
    assert task.train_data["x"].shape == (1404, 2) and task.test_data["x"].shape == (1405, 2)
    shapes = jax.tree_util.tree_map(jnp.shape, task.params)
    assert shapes["embed"]["embedding"] == (53, 12)
    assert shapes["left"]["kernel"] == (12, 48) and shapes["right"]["bias"] == (48,)
    assert shapes["out"] == {"kernel": (48, 53)}  # no bias
    assert task.meta["num_params"] == 53 * 12 + 2 * (12 * 48 + 48) + 48 * 53
    m = jax.jit(task.eval_fn)(task.params)
    assert abs(float(m["train_loss"]) - np.log(53)) < 1.0
    assert 0.0 <= float(m["test_acc"]) <= 0.2
    np.testing.assert_allclose(jax.jit(task.accuracy_fn)(task.params, task.test_data), m["test_acc"], rtol=1e-6)


@pytest.mark.slow
def test_transformer_forward():
    task = make_modular_task("transformer", p=13, train_frac=0.3, d_model=32, num_heads=4, d_mlp=64)
    run = jax.jit(lambda p, x: (lambda m: (m(x), m.residual(x)))(nnx.merge(task.graphdef, p)))
    x = jnp.array([[1, 2, 13], [3, 4, 13], [0, 0, 13]])
    x2 = x.at[:, 1].set(7)
    (logits, resid), (logits2, resid2) = run(task.params, x), run(task.params, x2)
    assert logits.shape == (3, 13) and resid.shape == (3, 3, 32)
    # Causal: changing b leaves position 0's residual unchanged.
    np.testing.assert_allclose(resid[:, 0], resid2[:, 0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(logits, logits2)
    assert isinstance(task.model, ModularTransformer)
    assert task.train_data["x"].shape == (51, 3)
    shapes = jax.tree_util.tree_map(jnp.shape, task.params)
    assert shapes["embed"]["W_E"] == (32, 14) and shapes["unembed"]["W_U"] == (32, 13)
    assert shapes["blocks"][0]["attn"]["W_Q"] == (4, 8, 32) and shapes["blocks"][0]["attn"]["W_O"] == (32, 32)
    assert shapes["blocks"][0]["mlp"]["W_in"] == (64, 32)
    assert np.isfinite(float(jax.jit(task.loss_fn)(task.params, task.train_data)))
    # Nanda's defaults: p=113, d_model 128, 4 heads, d_mlp 512 (abstract: shapes only).
    full = nnx.eval_shape(lambda: ModularTransformer(rngs=nnx.Rngs(0)))
    assert full.blocks[0].mlp.W_in.shape == (512, 128) and full.embed.W_E.shape == (128, 114)


# ----------------------------------------------------------------- training loop


def test_step_helpers():
    assert linear_steps(100, 5) == [0, 25, 50, 75, 100]
    s = log_steps(10_000, 5)
    assert s[0] == 0 and s[1] == 1 and s[-1] == 10_000 and s == sorted(set(s))
    assert log_steps(3, 10) == [0, 1, 2, 3]


def test_coupled_adam_order():
    """optax.chain(add_decayed_weights, adam) == PyTorch Adam(weight_decay): decay before Adam."""
    lr, wd, b1, b2, eps = 0.1, 0.5, 0.9, 0.999, 1e-8
    w = np.array([1.0, -2.0, 0.5])
    grads = [np.array([0.1, 0.2, -0.3]), np.array([-0.05, 0.1, 0.2])]
    opt = coupled_adam(lr, wd)
    params, state = jnp.asarray(w, jnp.float32), None
    state = opt.init(params)
    m = v = np.zeros(3)
    for t, g in enumerate(grads, start=1):
        upd, state = opt.update(jnp.asarray(g, jnp.float32), state, params)
        params = optax.apply_updates(params, upd)
        g2 = g + wd * w
        m, v = b1 * m + (1 - b1) * g2, b2 * v + (1 - b2) * g2 * g2
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    np.testing.assert_allclose(params, w, rtol=1e-5)


def test_train_decreases_loss_and_checkpoints(tmp_path):
    from slt.checkpoints import list_checkpoints, load_params

    task = make_modular_task("mlp", p=53, train_frac=0.5, seed=0)
    res = train(task.params, task.loss_fn, task.train_data, optimizer=task.optimizer, num_steps=300,
                batch_size=64, checkpoint_steps=[0, 100, 300], checkpoint_dir=tmp_path, eval_fn=task.eval_fn)
    assert res.steps == [0, 100, 300] and [h["step"] for h in res.history] == [0, 100, 300]
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < losses[0] - 0.5 and losses[1] < losses[0]
    assert res.history[-1]["train_acc"] > res.history[0]["train_acc"]
    assert {"test_loss", "test_acc", "train_acc", "wall_seconds"} <= set(res.history[0])
    # Saved files: one per checkpoint, in step order, equal to the in-memory params.
    found = list_checkpoints(tmp_path)
    assert [s for s, _ in found] == [0, 100, 300] and found[1][1].endswith("step_000100.safetensors")
    restored = load_params(found[1][1], template=task.params)
    for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(res.params[1])):
        np.testing.assert_array_equal(a, b)
    lines = [json.loads(l) for l in open(os.path.join(tmp_path, "metrics.jsonl"))]
    assert [l["step"] for l in lines] == [0, 100, 300]
    np.testing.assert_allclose(float(jax.jit(task.loss_fn)(res.final_params, task.train_data)), losses[-1], rtol=1e-5)
    # The initial params were not consumed by the donated carry.
    assert not any(x.is_deleted() for x in jax.tree_util.tree_leaves(task.params))


def test_train_nnx_module_full_batch():
    task = make_tms_task(4, n=256, seed=0)
    model_params = task.params

    class TMS(nnx.Module):
        def __init__(self):
            self.W = nnx.Param(model_params["W"])
            self.b = nnx.Param(model_params["b"])

    model = TMS()
    res = train(model, tms_loss, task.data, optimizer=optax.adam(0.05), num_steps=200,
                checkpoint_steps=log_steps(200, 4))
    assert res.steps == log_steps(200, 4)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    np.testing.assert_array_equal(model.W[...], res.final_params["W"])  # module updated in place


@pytest.mark.slow
def test_grokking_mlp():
    """REFERENCE §5: p=53, train fraction 0.5, coupled Adam -> train acc at 2k-3k, test acc later."""
    task = make_modular_task("mlp", p=53, train_frac=0.5, seed=0)
    res = train(task.params, task.loss_fn, task.train_data, optimizer=task.optimizer, num_steps=14_000,
                batch_size=128, checkpoint_steps=linear_steps(14_000, 29), eval_fn=task.eval_fn, seed=0)
    train_hit = next(h["step"] for h in res.history if h["train_acc"] >= 0.95)
    test_hit = next(h["step"] for h in res.history if h["test_acc"] >= 0.95)
    assert 1_000 <= train_hit <= 3_500
    assert 7_000 <= test_hit <= 14_000
    assert res.history[-1]["test_acc"] >= 0.95
