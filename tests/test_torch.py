"""PyTorch and Hugging Face models through torchax (slt.from_torch), torch checkpoints, Equinox.

Skipped where the "torch" extra is not installed; CI installs it (.ci/run), so these run there.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("torchax") is None:  # not imported here: slt.from_torch imports it (see torch_bridge)
    pytest.skip("torchax is not installed", allow_module_level=True)
F = torch.nn.functional
nn = torch.nn

import slt  # noqa: E402
from slt.checkpoints import CheckpointError, list_checkpoints, load_params, save_params  # noqa: E402
from slt.validation import SLTInputError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::slt.diagnostics.SLTWarning")  # few draws on purpose

# float32: XLA and torch reduce in different orders (one ulp per op); a bug is off by far more
TOL = dict(rtol=2e-5, atol=2e-6)


def ce(module, batch):
    x, y = batch
    return F.cross_entropy(module(x), y)


def torch_loss_and_grads(module, loss, batch):
    """torch's own loss and gradients (eval mode) on the same batch, as numpy."""
    module.eval()
    module.zero_grad()
    batch = jax.tree.map(lambda a: torch.from_numpy(np.asarray(a)), batch)
    value = loss(module, batch)
    value.backward()
    grads = {k: p.grad.numpy().copy() for k, p in module.named_parameters() if p.requires_grad}
    return value.item(), grads


def check_against_torch(module, loss, batch):
    loss_fn, params = slt.from_torch(module, loss)
    value, grads = jax.jit(jax.value_and_grad(loss_fn))(params, batch)
    want, want_grads = torch_loss_and_grads(module, loss, batch)
    np.testing.assert_allclose(float(value), want, **TOL)
    assert set(grads) == set(params)
    for name in params:
        np.testing.assert_allclose(np.asarray(grads[name]), want_grads[name], **TOL, err_msg=name)
    return loss_fn, params


def mlp(seed=0, d_in=4, hidden=16, d_out=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, d_out))


def classification(n=64, d_in=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d_in)).astype(np.float32), rng.integers(0, classes, n)  # int64 labels, as in torch


def test_mlp_loss_and_gradients_equal_torch():
    module = mlp()
    batch = classification()
    loss_fn, params = check_against_torch(module, ce, batch)
    # torch names and torch's [out, in] layout
    assert {k: v.shape for k, v in params.items()} == {k: tuple(p.shape) for k, p in module.named_parameters()}
    # vmap over a batch of parameter sets (what the chains do)
    stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
    values = jax.vmap(loss_fn, in_axes=(0, None))(stacked, batch)
    np.testing.assert_allclose(float(values[0]), float(loss_fn(params, batch)), **TOL)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 4 * 4, 5)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.head(self.dropout(x.flatten(1)))


def test_cnn_with_buffers_and_dropout_equals_torch_in_eval_mode():
    torch.manual_seed(1)
    module = CNN()
    with torch.no_grad():  # batch-norm statistics that are not the identity
        module.bn.running_mean.uniform_(-1, 1)
        module.bn.running_var.uniform_(0.5, 2)
    module.train()  # from_torch evaluates in eval mode whatever the module's mode, and restores it
    rng = np.random.default_rng(1)
    batch = (rng.normal(size=(8, 1, 8, 8)).astype(np.float32), rng.integers(0, 5, 8))
    loss_fn, params = slt.from_torch(module, ce)
    assert module.training
    assert "bn.running_mean" not in params and "bn.weight" in params  # buffers held fixed, not sampled
    module.train()
    check_against_torch(module, ce, batch)


def tiny_gpt2(seed=0, n_layer=1, n_head=2, n_embd=8, vocab=16, n_positions=8):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                                     n_head=n_head, bos_token_id=0, eos_token_id=0, loss_type="ForCausalLM")
    return transformers.GPT2LMHeadModel(config)  # in train mode, dropout 0.1: from_torch turns it off


def lm_loss(module, ids):
    return module(input_ids=ids, labels=ids).loss  # int labels: torch's Long ops run on JAX int32


@pytest.fixture(scope="module")
def gpt2():
    module = tiny_gpt2()
    ids = np.random.default_rng(2).integers(0, 16, (4, 8))
    loss_fn, params = slt.from_torch(module, lm_loss)
    return module, loss_fn, params, ids


def test_gpt2_loss_and_gradients_equal_torch(gpt2):
    module, loss_fn, params, ids = gpt2
    # the tied unembedding is the embedding: sampled once, under its first name
    assert "transformer.wte.weight" in params and "lm_head.weight" not in params
    check_against_torch(module, lm_loss, ids)


def test_gpt2_heads_by_torch_names(gpt2):
    module, loss_fn, params, ids = gpt2
    heads = slt.heads(params, num_heads=module.config.n_head)
    assert sorted(heads) == ["L0H0", "L0H1"]
    d, block = 8, 4
    qkv = np.asarray(heads["L0H1"]["transformer.h.0.attn.c_attn.weight"])  # HF Conv1D: [in, 3·out], q | k | v
    assert qkv.shape == (d, 3 * d) and qkv.all(axis=0).sum() == 3 * block
    assert all(qkv[:, j * d + block:(j + 1) * d].all() and not qkv[:, j * d:j * d + block].any() for j in range(3))
    proj = np.asarray(heads["L0H1"]["transformer.h.0.attn.c_proj.weight"])  # [in = heads·d_head, out]
    assert proj[block:].all() and not proj[:block].any()
    assert not np.asarray(heads["L0H1"]["transformer.wte.weight"]).any()
    # a head's refined LLC, and a glob over torch names, in one sampling program
    settings = dict(step_size=1e-4, num_chains=2, num_draws=20, nbeta=10.0, localization=100.0, seed=0)
    results = slt.estimate_llc_components(
        loss_fn, params, ids, components={"L0H0": heads["L0H0"], "attn": "transformer.h.0.attn.*"}, **settings)
    head, attn = results["L0H0"], results["attn"]
    assert np.isfinite(head.llc_mean) and np.isfinite(attn.llc_mean)
    assert head.llc_mean != attn.llc_mean
    assert head.num_params == d * 3 * block + 3 * block + block * d  # Q, K, V columns, their bias, c_proj rows


# ----------------------------------------------------------------------------- λ̂ against native JAX


def test_llc_through_from_torch_equals_native_jax():
    torch.manual_seed(3)
    module = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))

    def mse(module, batch):
        x, y = batch
        return ((module(x) - y) ** 2).mean()

    def native(params, batch):  # the same network written by hand in JAX, torch's layout and names
        x, y = batch
        h = jnp.tanh(x @ params["0.weight"].T + params["0.bias"])
        return jnp.mean((h @ params["2.weight"].T + params["2.bias"] - y) ** 2)

    rng = np.random.default_rng(3)
    x = rng.normal(size=(256, 2)).astype(np.float32)
    data = (x, np.sin(x[:, :1]).astype(np.float32))
    opt = torch.optim.Adam(module.parameters(), lr=0.03)
    for _ in range(200):  # near a minimum, as a checkpoint would be
        opt.zero_grad()
        mse(module, tuple(map(torch.from_numpy, data))).backward()
        opt.step()
    loss_fn, params = slt.from_torch(module, mse)
    settings = dict(step_size=1e-3, num_chains=2, num_draws=100, batch_size=32, localization=10.0, seed=7)
    bridged = slt.estimate_llc(loss_fn, params, data, **settings)
    hand = slt.estimate_llc(native, {k: jnp.asarray(v) for k, v in params.items()}, data, **settings)
    np.testing.assert_allclose(bridged.init_loss, hand.init_loss, rtol=1e-6)
    np.testing.assert_allclose(bridged.loss_trace, hand.loss_trace, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bridged.llc_mean, hand.llc_mean, rtol=1e-3)
    assert bridged.llc_mean > 0


# ----------------------------------------------------------------------------- torch checkpoints


def test_torch_checkpoint_folder_to_trajectory(tmp_path):
    """A torch training script's folder of state dicts (safetensors.torch.save_file) read as it is."""
    from safetensors.torch import save_file

    module = mlp(seed=4, d_in=4, hidden=8)
    x, y = classification(n=128, seed=4)
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for step in range(31):
        if step % 15 == 0:
            save_file(module.state_dict(), str(folder / f"step_{step}.safetensors"))
        if step == 30:
            break
        opt.zero_grad()
        ce(module, (torch.from_numpy(x), torch.from_numpy(y))).backward()
        opt.step()
    loss_fn, params = slt.from_torch(mlp(seed=99, d_in=4, hidden=8), ce)  # a fresh module: the template
    last = load_params(folder / "step_30.safetensors", params)
    for name, p in module.state_dict().items():
        np.testing.assert_array_equal(np.asarray(last[name]), p.numpy())
    traj = slt.llc_trajectory(loss_fn, str(folder), (x, y), template=params, step_size=1e-3, num_chains=2,
                              num_draws=20, localization=10.0, progress=False)
    assert list(traj.steps) == [0, 15, 30] and np.isfinite(traj.llc_mean).all()
    # without a template the torch names come back as they are (dotted keys are one key each)
    untyped = load_params(folder / "step_30.safetensors")
    assert set(untyped) == set(params)


def test_gpt2_state_dict_with_tied_weights_loads(gpt2, tmp_path):
    from safetensors.torch import save_file, save_model

    module, loss_fn, params, ids = gpt2
    save_model(module, str(tmp_path / "model.safetensors"))  # HF's way: the tied copy stored once
    full = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    save_file(full, str(tmp_path / "full.safetensors"))  # every name, lm_head.weight and buffers included
    for name in ("model.safetensors", "full.safetensors"):
        got = load_params(tmp_path / name, params)
        assert set(got) == set(params)
        for k in params:
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(params[k]), err_msg=f"{name}: {k}")
        np.testing.assert_allclose(float(loss_fn(got, ids)), float(loss_fn(params, ids)), rtol=1e-6)


def test_checkpoint_buffers_that_differ_are_named(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(5)
    module = CNN()
    loss_fn, params = slt.from_torch(module, ce)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    state["bn.running_mean"] += 1.0
    save_file(state, str(tmp_path / "step_1.safetensors"))
    with pytest.warns(UserWarning, match=r"bn\.running_mean.*load its state dict into the torch module"):
        got = load_params(tmp_path / "step_1.safetensors", params)
    assert set(got) == set(params)
    # the params without the template: the buffers are extra names, and the loss says what to do
    with pytest.raises(SLTInputError, match=r"bn\.running_mean.*template=params"):
        loss_fn(load_params(tmp_path / "step_1.safetensors"), (np.zeros((1, 1, 8, 8), np.float32), np.zeros(1, int)))


def _run_conversion(message: str, cwd):
    """Run the one-line conversion that the refusal message gives (as a user would paste it)."""
    line = re.search(r'python -c "(.*)"', message).group(1)
    here = os.getcwd()
    os.chdir(cwd)
    try:
        exec(compile(line, "<conversion line>", "exec"), {})
    finally:
        os.chdir(here)


def test_pickles_refused_with_the_conversion_line(tmp_path):
    module = mlp(seed=6)
    loss_fn, params = slt.from_torch(module, ce)
    path = tmp_path / "model.pt"
    torch.save(module.state_dict(), str(path))
    with pytest.raises(CheckpointError, match="refusing") as err:
        load_params(path, params)
    assert "safetensors" in str(err.value) and "weights_only=True" in str(err.value)
    _run_conversion(str(err.value), tmp_path)
    got = load_params(tmp_path / "model.safetensors", params)
    np.testing.assert_array_equal(np.asarray(got["0.weight"]), module[0].weight.detach().numpy())

    folder = tmp_path / "run"
    folder.mkdir()
    for step in (10, 20):
        torch.save(module.state_dict(), str(folder / f"step_{step}.bin"))
    with pytest.raises(CheckpointError, match="only pickle-based") as err:
        list_checkpoints(folder)
    _run_conversion(str(err.value), tmp_path)
    assert [s for s, _ in list_checkpoints(folder)] == [10, 20]


def test_naming_errors_say_what_to_do(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(7)
    module = nn.Sequential(nn.Linear(3, 4))
    save_file(module.state_dict(), str(tmp_path / "torch.safetensors"))
    flax_template = {"dense": {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(4)}}
    with pytest.raises(CheckpointError, match=r"PyTorch state dict.*slt\.from_torch.*key_map"):
        load_params(tmp_path / "torch.safetensors", flax_template)
    # key_map renames and transposes ("T": torch's [out, in] -> flax's [in, out])
    got = load_params(tmp_path / "torch.safetensors", flax_template,
                      key_map={"0.weight": ("dense/kernel", "T"), "0.bias": "dense/bias"})
    np.testing.assert_array_equal(np.asarray(got["dense"]["kernel"]), module[0].weight.detach().numpy().T)
    # the other way: a file written from a flax tree, read into from_torch params
    _, params = slt.from_torch(module, ce)
    save_params(tmp_path / "flax.safetensors", flax_template)
    with pytest.raises(CheckpointError, match=r"safetensors\.torch\.save_file"):
        load_params(tmp_path / "flax.safetensors", params)


# ----------------------------------------------------------------------------- refusals


def test_bridge_refusals(gpt2, monkeypatch):
    _, loss_fn, params, ids = gpt2
    with pytest.raises(SLTInputError, match="missing.*transformer.wpe.weight"):
        loss_fn({k: v for k, v in params.items() if k != "transformer.wpe.weight"}, ids)
    with pytest.raises(SLTInputError, match="torch.nn.Module"):
        slt.from_torch(lambda x: x, ce)
    per_example = lambda m, b: F.cross_entropy(m(b[0]), b[1], reduction="none")
    bad_fn, p = slt.from_torch(mlp(), per_example)
    with pytest.raises(SLTInputError, match="scalar"):
        bad_fn(p, classification())
    # without torchax: the install hint, not an ImportError
    from slt import torch_bridge

    monkeypatch.setitem(sys.modules, "torchax", None)
    torch_bridge._torchax.cache_clear()
    try:
        with pytest.raises(SLTInputError, match=r"slt-jax\[torch\]"):
            slt.from_torch(mlp(), ce)
    finally:
        monkeypatch.undo()
        torch_bridge._torchax.cache_clear()


# ----------------------------------------------------------------------------- --torch-model tasks


def test_load_torch_model_from_a_file_beside_its_modules(tmp_path):
    from slt.cli import UserError
    from slt.task import load_torch_model

    (tmp_path / "mynet.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(3, 2)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x)\n"
    )
    (tmp_path / "task.py").write_text(
        "import torch, torch.nn.functional as F\n"
        "from mynet import Net\n"  # a sibling module
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))\n"
        "    return Net(), lambda m, b: F.cross_entropy(m(b[0]), b[1]), (x, y)\n"
        "def wrong():\n"
        "    return Net()\n"
    )
    loss_fn, params, data = load_torch_model(f"{tmp_path}/task.py:make")
    assert set(params) == {"fc.weight", "fc.bias"}
    assert isinstance(data[0], np.ndarray) and data[0].shape == (16, 3)
    assert np.isfinite(float(loss_fn(params, data)))
    with pytest.raises(UserError, match=r"must return \(module, loss, data\)"):
        load_torch_model(f"{tmp_path}/task.py:wrong")


# ----------------------------------------------------------------------------- Equinox


def test_from_equinox_loss_and_llc():
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(2, 1, 8, 1, activation=jax.nn.tanh, key=jax.random.key(0))

    def mse(model, batch):
        x, y = batch
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)

    loss_fn, params = slt.from_equinox(model, mse)
    x = np.random.default_rng(8).normal(size=(64, 2)).astype(np.float32)
    data = (x, x[:, :1] ** 2)
    assert float(loss_fn(params, data)) == pytest.approx(float(mse(model, data)), rel=1e-6)
    result = slt.estimate_llc(loss_fn, params, data, step_size=1e-3, num_chains=2, num_draws=20, localization=10.0)
    assert np.isfinite(result.llc_mean)
