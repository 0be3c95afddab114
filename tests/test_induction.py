"""The induction-head organism: model, data, mechanistic scores, training."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slt.models import induction as ind

CFG = ind.InductionConfig(vocab=10, n_ctx=12, d_model=16, num_layers=2, num_heads=3, d_head=4)


@pytest.fixture(scope="module")
def params():
    return ind.init_params(jax.random.key(0), CFG)


# ----------------------------------------------------------------- model


def test_shapes_and_layout(params):
    assert params["embed"]["W_E"].shape == (16, 10)
    assert params["pos_embed"]["W_pos"].shape == (12, 16)
    assert params["unembed"]["W_U"].shape == (16, 10)
    assert sorted(params["blocks"]) == ["0", "1"]
    for layer in ("0", "1"):
        attn = params["blocks"][layer]["attn"]
        assert set(attn) == {"W_Q", "W_K", "W_V", "W_O"} and set(params["blocks"][layer]) == {"attn"}
        assert attn["W_Q"].shape == attn["W_K"].shape == attn["W_V"].shape == (3, 4, 16)
        assert attn["W_O"].shape == (3, 16, 4)
    assert ind.config_of(params) == CFG
    tokens = ind.repeated_tokens(5, 10, 12, 0)
    assert ind.forward(params, tokens).shape == (5, 12, 10)
    assert ind.forward(params, tokens[0]).shape == (12, 10)  # unbatched
    assert ind.forward(params, tokens[:, :7]).shape == (5, 7, 10)  # shorter than n_ctx
    assert ind.attention_patterns(params, tokens).shape == (2, 5, 3, 12, 12)
    assert ind.per_token_loss(params, tokens).shape == (5, 11)
    assert ind.loss_fn(params, {"tokens": tokens}).shape == ()
    with pytest.raises(ValueError, match="n_ctx=12"):
        ind.forward(params, np.zeros((2, 13), np.int32))
    with pytest.raises(ValueError, match="num_heads"):
        ind.InductionConfig(num_heads=0)


def test_causal_masking(params):
    tokens = ind.repeated_tokens(4, 10, 12, 1)
    pattern = np.asarray(ind.attention_patterns(params, tokens))
    np.testing.assert_allclose(pattern.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(np.ones((12, 12)), 1) * pattern == 0)  # no attention to later keys
    assert np.all(pattern[..., 0, 0] == 1.0)
    # changing the token at position 7 changes no logit before it, and the logits at 7 onward
    other = tokens.copy()
    other[:, 7] = (other[:, 7] + 1) % 10
    a, b = np.asarray(ind.forward(params, tokens)), np.asarray(ind.forward(params, other))
    np.testing.assert_array_equal(a[:, :7], b[:, :7])
    assert np.abs(a[:, 7:] - b[:, 7:]).max() > 1e-4


def test_forward_matches_per_head_sum(params):
    """The attention layer is Σ_h W_O[h] · softmax(q_h k_hᵀ/√d_head) v_h, written out head by head."""
    tokens = ind.repeated_tokens(2, 10, 12, 2)[0]
    attn = params["blocks"]["0"]["attn"]
    x = np.asarray(params["embed"]["W_E"]).T[tokens] + np.asarray(params["pos_embed"]["W_pos"])
    out = np.zeros_like(x)
    for h in range(3):
        q, k, v = (x @ np.asarray(attn[w][h]).T for w in ("W_Q", "W_K", "W_V"))
        s = q @ k.T / 2.0
        s[np.triu_indices(12, 1)] = -np.inf
        a = np.exp(s - s.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        out += (a @ v) @ np.asarray(attn["W_O"][h]).T
    one_layer = {**params, "blocks": {"0": params["blocks"]["0"]}}
    expected = (x + out) @ np.asarray(params["unembed"]["W_U"])
    np.testing.assert_allclose(ind.forward(one_layer, tokens), expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- data


def test_repeated_tokens():
    x = ind.repeated_tokens(200, 16, 12, 3)  # prefix + repeat, distinct
    assert x.shape == (200, 12) and x.dtype == np.int32
    np.testing.assert_array_equal(x[:, 6:], x[:, :6])
    assert all(len(set(row[:6])) == 6 for row in x)
    assert x.min() >= 0 and x.max() < 16
    np.testing.assert_array_equal(x, ind.repeated_tokens(200, 16, 12, 3))  # reproducible
    assert not np.array_equal(x, ind.repeated_tokens(200, 16, 12, 4))
    y = ind.repeated_tokens(500, 8, 20, 0, period=(2, 5), distinct=False)
    periods = []
    for row in y:
        m = next(m for m in range(2, 6) if np.array_equal(row[m:], row[:-m]))
        periods.append(m)
    assert set(periods) == {2, 3, 4, 5}  # every period occurs (the smallest that fits is found)
    assert any(len(set(row[:5])) < 5 for row in y)  # i.i.d. tokens repeat within a segment
    # uniform tokens: each of 8 tokens about 1/8 of the segment positions
    freq = np.bincount(y[:, 0], minlength=8) / 500
    assert np.abs(freq - 1 / 8).max() < 0.06
    with pytest.raises(ValueError, match="even"):
        ind.repeated_tokens(2, 10, 7, 0)
    with pytest.raises(ValueError, match="period"):
        ind.repeated_tokens(2, 10, 8, 0, period=(3, 9))
    with pytest.raises(ValueError, match="vocab"):
        ind.repeated_tokens(2, 4, 12, 0)


# ----------------------------------------------------------------- scores


def _uniform_causal(n):
    return np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]


def test_scores_on_hand_made_patterns():
    n, half = 12, 6
    prev = np.zeros((n, n))
    prev[0, 0] = 1.0
    prev[np.arange(1, n), np.arange(n - 1)] = 1.0
    assert float(ind.previous_token_score(prev)) == 1.0
    assert float(ind.prefix_matching_score(prev, half)) == 0.0
    induction = np.zeros((n, n))
    induction[np.arange(n), 0] = 1.0
    induction[half + np.arange(half), np.arange(half) + 1] = 1.0
    induction[half, :] = 0.0
    induction[half, [1, 0]] = 0.5  # the first query of the repeat splits evenly
    assert float(ind.prefix_matching_score(induction, half)) == pytest.approx(1 - 0.5 / half, abs=1e-7)
    # query half+i attends to key i+1; it is key t-1 only for no query (half > 2), plus query 1 -> key 0
    assert float(ind.previous_token_score(induction)) == pytest.approx(1 / (n - 1), abs=1e-7)
    uniform = _uniform_causal(n)
    assert float(ind.previous_token_score(uniform)) == pytest.approx(np.mean(1 / np.arange(2, n + 1)), abs=1e-7)
    assert float(ind.prefix_matching_score(uniform, half)) == pytest.approx(
        np.mean(1 / (half + np.arange(half) + 1)), abs=1e-7)
    # leading axes are kept
    stacked = np.stack([prev, uniform])[None]
    assert ind.previous_token_score(stacked).shape == (1, 2)
    with pytest.raises(ValueError, match="2·prefix_len"):
        ind.prefix_matching_score(prev, 5)
    with pytest.raises(ValueError, match="query == key"):
        ind.previous_token_score(np.ones((3, 4)))


def _circuit(vocab, n_ctx, *, sharp=1e3, out=10.0):
    """A hand-built induction circuit (Elhage et al. 2021): L0H0 previous-token, L1H0 induction, H1 zero.

    Residual blocks: token one-hot [0, V), position one-hot [V, V+T), the
    previous token [V+T, 2V+T) (written by L0H0), the copied token [2V+T, 3V+T)
    (written by L1H0, read by the unembedding).
    """
    V, T = vocab, n_ctx
    tok, pos, prv, cpy = (np.arange(V), V + np.arange(T), V + T + np.arange(V), 2 * V + T + np.arange(V))
    d_model, d_head, H = 3 * V + T, max(V, T), 2
    c = np.sqrt(sharp * np.sqrt(d_head))  # score of a match = sharp
    z = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    W_E, W_pos, W_U = z(d_model, V), z(T, d_model), z(d_model, V)
    W_E[tok, np.arange(V)] = 1.0
    W_pos[np.arange(T), pos] = 1.0
    W_U[cpy, np.arange(V)] = out
    layers = []
    for _ in range(2):
        layers.append({w: z(H, d_head, d_model) for w in ("W_Q", "W_K", "W_V")} | {"W_O": z(H, d_model, d_head)})
    L0, L1 = layers
    L0["W_Q"][0, np.arange(T), pos] = c  # query at t reads e_t
    L0["W_K"][0, np.arange(1, T), pos[:-1]] = c  # key at s reads e_{s+1}: match when s = t - 1
    L0["W_V"][0, np.arange(V), tok] = 1.0
    L0["W_O"][0, prv, np.arange(V)] = 1.0
    L1["W_Q"][0, np.arange(V), tok] = c  # query: the current token
    L1["W_K"][0, np.arange(V), prv] = c  # key: the token before the key
    L1["W_V"][0, np.arange(V), tok] = 1.0
    L1["W_O"][0, cpy, np.arange(V)] = 1.0
    params = {"embed": {"W_E": W_E}, "pos_embed": {"W_pos": W_pos}, "unembed": {"W_U": W_U},
              "blocks": {str(i): {"attn": layers[i]} for i in range(2)}}
    return jax.tree_util.tree_map(jnp.asarray, params)


def test_scores_of_a_hand_built_circuit():
    V, T = 16, 12
    half = T // 2
    params = _circuit(V, T)
    tokens = ind.repeated_tokens(64, V, T, 0)
    s = ind.head_scores(params, tokens)
    pm, pt = np.asarray(s["prefix_matching"]), np.asarray(s["previous_token"])
    assert pm.shape == pt.shape == (2, 2)
    uniform_pt, uniform_pm = np.mean(1 / np.arange(2, T + 1)), np.mean(1 / (half + np.arange(half) + 1))
    # L0H0 is exactly previous-token; the zero heads attend uniformly
    assert pt[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert pm[0, 0] == pytest.approx(0.0, abs=1e-6)
    for l in (0, 1):
        assert pt[l, 1] == pytest.approx(uniform_pt, abs=1e-6)
        assert pm[l, 1] == pytest.approx(uniform_pm, abs=1e-6)
    # L1H0: query half+i -> key i+1, except the first (x_0): keys 1 and 0 (L0H0 at position 0 reads itself)
    assert pm[1, 0] == pytest.approx(1 - 0.5 / half, abs=1e-6)
    # in the prefix no key matches: uniform attention; in the repeat never the previous position
    assert pt[1, 0] == pytest.approx(np.sum(1 / np.arange(2, half + 1)) / (T - 1), abs=1e-6)
    # the circuit predicts the repeat after its first token: logit 10 on the copied token, except after x_0,
    # where the logits are 5 on x_1 and on x_0
    m = ind.mechanism_fn(tokens)(params)
    exact = (np.log(2 + (V - 2) * np.exp(-5.0)) + (half - 2) * np.log(1 + (V - 1) * np.exp(-10.0))) / (half - 1)
    assert float(m["repeat_loss"]) == pytest.approx(exact, rel=1e-4)
    assert float(m["in_context_loss"]) < -3.0
    np.testing.assert_allclose(m["prefix_matching"], pm, atol=1e-6)


def test_in_context_loss_positions(params):
    tokens = ind.repeated_tokens(8, 10, 12, 0)
    per_tok = np.asarray(ind.per_token_loss(params, tokens)).mean(0)
    # defaults: early token round(0.1·12) = 1, late token 11 (entry t-1 predicts token t)
    assert float(ind.in_context_loss(params, tokens)) == pytest.approx(per_tok[10] - per_tok[0], abs=1e-6)
    assert float(ind.in_context_loss(params, tokens, early=3, late=9)) == pytest.approx(per_tok[8] - per_tok[2], abs=1e-6)
    per_seq = np.asarray(ind.per_token_loss(params, tokens))
    diff = per_seq[:, 10] - per_seq[:, 0]  # each sequence's own late-minus-early loss
    assert float(ind.in_context_loss_sem(params, tokens)) == pytest.approx(diff.std(ddof=1) / np.sqrt(8), rel=1e-4)
    with pytest.raises(ValueError, match="early and late"):
        ind.in_context_loss(params, tokens, early=0)
    with pytest.raises(ValueError, match="early and late"):
        ind.in_context_loss(params, tokens, late=12)


def test_formation_step():
    f = ind.formation_step([0, 10, 20, 30], [0.0, 0.0, 1.0, 1.0])
    assert (f["start"], f["mid"], f["end"]) == pytest.approx((11.0, 15.0, 19.0))
    f = ind.formation_step([0, 10, 20, 40], [0.2, 0.2, 0.6, 1.0])  # 10 %: 0.28, 90 %: 0.92
    assert f["start"] == pytest.approx(12.0) and f["end"] == pytest.approx(36.0) and f["final"] == 1.0
    assert ind.formation_step([0, 1, 2], [0.5, 0.4, 0.3])["start"] is None  # falls: no formation
    with pytest.raises(ValueError, match="matching"):
        ind.formation_step([0, 1], [0.1])


# ----------------------------------------------------------------- components


def test_head_masks_and_paths(params):
    assert ind.attention_paths(params) == {
        l: tuple(f"blocks/{l}/attn/{w}" for w in ("W_Q", "W_K", "W_V", "W_O")) for l in (0, 1)
    }
    names = ind.head_names(params)
    assert names == ["L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H2"]
    masks = ind.head_masks(params)
    assert list(masks) == names
    per_head = 3 * 4 * 16 + 16 * 4
    total = jax.tree_util.tree_map(lambda x: np.zeros(np.shape(x), int), params)
    for name, mask in masks.items():
        assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(params)
        assert sum(int(np.sum(m)) for m in jax.tree_util.tree_leaves(mask)) == per_head
        l, h = int(name[1]), int(name[3])
        for w in ("W_Q", "W_K", "W_V", "W_O"):
            m = masks[name]["blocks"][str(l)]["attn"][w]
            assert m[h].all() and m.sum() == m[h].size
        total = jax.tree_util.tree_map(lambda t, m: t + m, total, mask)
    for l in ("0", "1"):  # the heads partition the attention weights, nothing else is free
        for w in ("W_Q", "W_K", "W_V", "W_O"):
            assert (total["blocks"][l]["attn"][w] == 1).all()
    assert not total["embed"]["W_E"].any() and not total["unembed"]["W_U"].any()
    # zeroing one head's masked weights silences only that head's output
    masked = jax.tree_util.tree_map(lambda p, m: jnp.where(m, 0.0, p), params, masks["L1H2"])
    assert float(jnp.abs(masked["blocks"]["1"]["attn"]["W_O"][2]).max()) == 0.0
    assert float(jnp.abs(masked["blocks"]["1"]["attn"]["W_O"][1]).max()) > 0.0


# ----------------------------------------------------------------- task and training


def test_task_and_short_training(tmp_path):
    from slt.checkpoints import load_params

    task = ind.make_induction_task(0, vocab=12, n_ctx=12, period=(3, 6), d_model=16, d_head=4, n=256, n_eval=32)
    assert task.data["tokens"].shape == (256, 12)
    assert task.meta["score_tokens"].shape == task.meta["icl_tokens"].shape == (32, 12)
    assert task.meta["config"] == ind.config_of(task.params)
    assert task.meta["num_params"] == 16 * 12 * 2 + 12 * 16 + 2 * 4 * 3 * 4 * 16
    steps = ind.log_linear_steps(60, 8)
    assert steps[0] == 0 and steps[-1] == 60 and steps == sorted(set(steps))
    result = ind.train_induction(task, num_steps=60, checkpoint_steps=steps, checkpoint_dir=tmp_path)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.05
    hist = ind.mechanism_history(result.history)
    assert hist["prefix_matching"].shape == (len(steps), 2, 3) and hist["in_context_loss"].shape == (len(steps),)
    summary = ind.formation_summary(result.history)
    assert set(summary["heads"]) == set(ind.head_names(task.params))
    json.dumps(summary)  # report-ready
    # checkpoints in a safe format, readable without a template, same predictions
    path = tmp_path / "step_000060.safetensors"
    assert path.exists() and (tmp_path / "metrics.jsonl").exists()
    loaded = load_params(path)
    tokens = task.meta["score_tokens"]
    np.testing.assert_allclose(ind.forward(loaded, tokens), ind.forward(result.params[-1], tokens), rtol=1e-6)
    with pytest.raises(ValueError, match="mechanism_fn"):
        ind.mechanism_history([{"step": 0, "train_loss": 1.0}])


@pytest.mark.slow
def test_training_forms_an_induction_head():
    """The default organism (2000 steps, ~10 s of training on 2 cores): induction and previous-token heads form together."""
    task = ind.make_induction_task(0)
    result = ind.train_induction(task)
    s = ind.formation_summary(result.history)
    assert any(h.startswith("L1") for h in s["induction_heads"])
    assert any(h.startswith("L0") for h in s["previous_token_heads"])
    ih = s["heads"][s["induction_heads"][0]]["formation"]
    pt = s["heads"][s["previous_token_heads"][0]]["formation"]
    num_steps = task.meta["num_steps"]
    assert 0.05 * num_steps < ih["start"] < ih["end"] < 0.6 * num_steps  # well inside the run
    assert abs(pt["start"] - ih["start"]) < 0.1 * num_steps  # they start together
    a, b = s["in_context_loss"]["steepest_drop"]
    assert ih["start"] <= b and a <= ih["end"]  # the in-context loss falls in the same window
    assert s["in_context_loss"]["values"][-1] < -2.0


def test_config_refuses_non_positive_sizes():
    with pytest.raises(ValueError, match="num_heads must be an integer ≥ 1, got 0"):
        ind.InductionConfig(num_heads=0)
    with pytest.raises(ValueError, match="d_head must be an integer ≥ 1, got True"):
        ind.InductionConfig(d_head=True)
