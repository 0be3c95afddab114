"""Round trips, refusals and error messages of slt.checkpoints."""

import os
import pickle
import struct
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from slt.checkpoints import (
    CheckpointError,
    from_torch_state_dict_file,
    list_checkpoints,
    load_params,
    save_params,
)


def _nested():
    k = jax.random.split(jax.random.key(0), 4)
    return {
        "embed": {"embedding": jax.random.normal(k[0], (5, 3))},
        "layers": [
            {"kernel": jax.random.normal(k[1], (3, 4)), "bias": jnp.zeros(4)},
            {"kernel": jax.random.normal(k[2], (4, 2)).astype(jnp.bfloat16), "bias": jnp.arange(2, dtype=jnp.int32)},
        ],
        "scale": jnp.float32(2.5),
    }


def _assert_tree_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


class _MLP(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(3, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)])

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


@pytest.mark.parametrize("ext", [".safetensors", ".msgpack", ".npz"])
def test_round_trip_files(tmp_path, ext):
    params = _nested()
    path = save_params(tmp_path / f"p{ext}", params)
    _assert_tree_equal(load_params(path, template=params), params)
    raw = load_params(path)  # no template: nested string-keyed dicts
    assert set(raw) == {"embed", "layers", "scale"} and set(raw["layers"]) == {"0", "1"}
    np.testing.assert_array_equal(raw["layers"]["0"]["kernel"], params["layers"][0]["kernel"])
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_round_trip_orbax(tmp_path):
    params = _nested()
    save_params(tmp_path / "single", params)
    _assert_tree_equal(load_params(tmp_path / "single", template=params), params)
    mgr = tmp_path / "mgr"
    for s in (0, 10, 200):
        save_params(mgr, jax.tree_util.tree_map(lambda x: x + s, params), step=s)
    assert [s for s, _ in list_checkpoints(mgr)] == [0, 10, 200]
    latest = load_params(mgr, template=params)
    np.testing.assert_allclose(latest["embed"]["embedding"], params["embed"]["embedding"] + 200, rtol=1e-6)
    ten = load_params(mgr, template=params, step=10)
    np.testing.assert_allclose(ten["scale"], 12.5)
    step_dir = dict(list_checkpoints(mgr))[10]
    np.testing.assert_allclose(load_params(step_dir, template=params)["scale"], 12.5)
    with pytest.raises(CheckpointError, match="step 5"):
        load_params(mgr, step=5)


@pytest.mark.parametrize("ext", [".safetensors", ".msgpack", ".npz"])
def test_nnx_state_round_trip(tmp_path, ext):
    model = _MLP(nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    path = save_params(tmp_path / f"m{ext}", state)
    # State template -> State; pure-dict template -> pure dict; same keys either way.
    restored = load_params(path, template=nnx.split(_MLP(nnx.Rngs(1)))[1])
    x = jnp.ones((2, 3))
    np.testing.assert_allclose(nnx.merge(graphdef, restored)(x), model(x), rtol=1e-6)
    pure = load_params(path, template=nnx.to_pure_dict(state))
    np.testing.assert_allclose(nnx.merge(graphdef, pure)(x), model(x), rtol=1e-6)
    abstract = jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(_MLP(nnx.Rngs(2)))))
    np.testing.assert_allclose(nnx.merge(graphdef, load_params(path, abstract))(x), model(x), rtol=1e-6)


def test_single_array(tmp_path):
    a = jnp.arange(6.0).reshape(2, 3)
    for ext in (".safetensors", ".npz", ".msgpack"):
        p = save_params(tmp_path / f"a{ext}", a)
        np.testing.assert_array_equal(load_params(p), a)
        np.testing.assert_array_equal(load_params(p, template=a), a)
    np.save(tmp_path / "b.npy", np.ones(3))
    np.testing.assert_array_equal(load_params(tmp_path / "b.npy"), np.ones(3))


@pytest.mark.parametrize("name", ["w.pkl", "w.pickle", "w.pt", "w.pth", "pytorch_model.bin"])
def test_pickle_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"w": np.ones(2)}))
    with pytest.raises(CheckpointError, match="pickle") as e:
        load_params(path)
    assert str(path) in str(e.value) and "safetensors" in str(e.value)
    with pytest.raises(CheckpointError, match="pickle"):
        from_torch_state_dict_file(path, {"w": np.ones(2)})
    with pytest.raises(CheckpointError):
        save_params(path, {"w": np.ones(2)})


def test_object_arrays_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="object arrays") as e:
        load_params(tmp_path / "obj.npz")
    assert "obj.npz" in str(e.value)
    np.save(tmp_path / "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError, match="object array"):
        load_params(tmp_path / "obj.npy")


@pytest.mark.parametrize("ext", [".safetensors", ".msgpack", ".npz"])
def test_truncated(tmp_path, ext):
    params = _nested()
    path = save_params(tmp_path / f"t{ext}", params)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match="truncated|corrupt") as e:
        load_params(path, template=params)
    assert f"t{ext}" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_params(tmp_path / "nope.safetensors")


def test_mismatch_errors(tmp_path):
    params = _nested()
    path = save_params(tmp_path / "m.safetensors", params)
    wrong_shape = jax.tree_util.tree_map(lambda x: x, params)
    wrong_shape["layers"][0]["kernel"] = jnp.zeros((3, 5))
    with pytest.raises(CheckpointError) as e:
        load_params(path, template=wrong_shape)
    msg = str(e.value)
    assert "m.safetensors" in msg and "layers/0/kernel" in msg and "(3, 5)" in msg and "(3, 4)" in msg
    wrong_tree = dict(params, extra=jnp.zeros(2))
    with pytest.raises(CheckpointError, match="extra") as e:
        load_params(path, template=wrong_tree)
    assert "expected but not found" in str(e.value)
    fewer = {k: v for k, v in params.items() if k != "scale"}
    with pytest.raises(CheckpointError, match="found but not expected.*scale"):
        load_params(path, template=fewer)


def test_list_checkpoints_order(tmp_path):
    p = {"w": jnp.ones(2)}
    for s in (1000, 5, 20, 0):
        save_params(tmp_path / f"step_{s:06d}.safetensors", p)
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "notes_2.txt").write_text("x")
    got = list_checkpoints(tmp_path)
    assert [s for s, _ in got] == [0, 5, 20, 1000]
    assert got[-1][1].endswith("step_001000.safetensors")
    only_pickle = tmp_path / "pk"
    only_pickle.mkdir()
    (only_pickle / "ckpt_10.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="pickle"):
        list_checkpoints(only_pickle)


def _write_torch_safetensors(path, tensors):
    """A PyTorch-style safetensors file written by hand (torch is not installed)."""
    import safetensors.numpy

    safetensors.numpy.save_file(tensors, str(path), metadata={"format": "pt"})


def test_torch_state_dict(tmp_path):
    rng = np.random.default_rng(0)
    torch_sd = {
        "embedding.weight": rng.normal(size=(7, 3)).astype(np.float32),
        "fc1.weight": rng.normal(size=(4, 3)).astype(np.float32),  # torch Linear: [out, in]
        "fc1.bias": rng.normal(size=(4,)).astype(np.float32),
        "conv.weight": rng.normal(size=(8, 2, 3, 3)).astype(np.float32),  # [out, in, kh, kw]
        "norm.weight": np.ones(4, np.float32),
        "norm.bias": np.zeros(4, np.float32),
        "head.W_U": rng.normal(size=(4, 7)).astype(np.float32),
        "bn.num_batches_tracked": np.zeros((), np.int64),
    }
    path = tmp_path / "model.safetensors"
    _write_torch_safetensors(path, torch_sd)
    template = {
        "embedding": {"embedding": jnp.zeros((7, 3))},
        "fc1": {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(4)},
        "conv": {"kernel": jnp.zeros((3, 3, 2, 8))},
        "norm": {"scale": jnp.zeros(4), "bias": jnp.zeros(4)},
        "unembed": jnp.zeros((4, 7)),
    }
    got = from_torch_state_dict_file(path, template, key_map={"head.W_U": "unembed"})
    np.testing.assert_array_equal(got["fc1"]["kernel"], torch_sd["fc1.weight"].T)
    np.testing.assert_array_equal(got["embedding"]["embedding"], torch_sd["embedding.weight"])
    np.testing.assert_array_equal(got["conv"]["kernel"], torch_sd["conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(got["unembed"], torch_sd["head.W_U"])
    np.testing.assert_array_equal(got["norm"]["scale"], 1.0)
    # A flax Linear run on the converted weights equals torch's x @ W.T + b.
    x = rng.normal(size=(2, 3)).astype(np.float32)
    lin = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    nnx.update(lin, {"kernel": got["fc1"]["kernel"], "bias": got["fc1"]["bias"]})
    np.testing.assert_allclose(lin(x), x @ torch_sd["fc1.weight"].T + torch_sd["fc1.bias"], rtol=1e-5)
    # Without transposition the [out, in] weight does not fit.
    with pytest.raises(CheckpointError, match="fc1/kernel"):
        from_torch_state_dict_file(path, template, key_map={"head.W_U": "unembed"}, transpose_linear=False)
    # Callable key map; unmapped tensors are reported.
    with pytest.raises(CheckpointError, match="head/W_U"):
        from_torch_state_dict_file(path, template)
    fn = lambda k: "unembed" if k == "head.W_U" else None if k.startswith("bn.") else None
    with pytest.raises(CheckpointError, match="expected but not found"):
        from_torch_state_dict_file(path, template, key_map=fn)


def test_safetensors_header_is_standard(tmp_path):
    """Files written here are readable by the safetensors library itself."""
    import safetensors.numpy

    p = save_params(tmp_path / "s.safetensors", {"a": {"b": jnp.ones((2, 3))}}, metadata={"step": "3"})
    loaded = safetensors.numpy.load_file(p)
    np.testing.assert_array_equal(loaded["a/b"], np.ones((2, 3)))
    (n,) = struct.unpack("<Q", open(p, "rb").read(8))
    assert json.loads(open(p, "rb").read()[8 : 8 + n])["__metadata__"] == {"step": "3"}
