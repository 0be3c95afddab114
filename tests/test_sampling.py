"""The sampling program (slt.sampling): streaming, continuation, acceptance checks on global steps, memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slt.posterior import Hyperparameters
from slt.sampling import ProgramInputs, RunConfig, chain_keys, compiled_program
from tests.support import DATA, HP, PARAMS, loss, run


@pytest.mark.slow
def test_streaming_equals_in_memory():
    memory = run()
    streamed = run(stream_chunks=20)
    np.testing.assert_allclose(streamed.loss_trace, memory.loss_trace, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(streamed.acceptance_steps, memory.acceptance_steps)
    assert streamed.extras["num_chunks"] == 3
    with pytest.raises(ValueError, match="full-batch"):
        run(config=RunConfig("sgld", 4, 10, 1000), stream_chunks=5)

def test_streaming_from_a_memmap(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, DATA["x"])
    data = {"x": np.load(path, mmap_mode="r"), "y": DATA["y"]}
    a = run(data, stream_chunks=40)  # 40 + 20 steps
    np.testing.assert_allclose(a.loss_trace, run().loss_trace, rtol=1e-6, atol=1e-6)

@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["psgld"])  # the richest state (position, square_avg, count)
def test_continuing_a_run_equals_one_longrun(sampler):
    full = run(config=RunConfig(sampler, 4, 60, 16, acceptance_every=10))
    half = RunConfig(sampler, 4, 30, 16, acceptance_every=10)
    a = run(config=half, return_state=True)
    b = run(config=half, init_state=a.final_state, return_state=True)
    np.testing.assert_allclose(np.concatenate([a.loss_trace, b.loss_trace], 1), full.loss_trace, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([a.acceptance_steps, b.acceptance_steps]), full.acceptance_steps)
    assert b.final_state.step == 60

@pytest.mark.slow
@pytest.mark.parametrize("split", [0, 3, 25, 59])
def test_acceptance_checks_sit_on_global_steps_whatever_the_chunking(split):
    """Checks at the steps ≡ 0 mod every, with the same values, however the run is cut into programs."""
    every = 7
    full = run(config=RunConfig("sgld", 4, 60, 16, acceptance_every=every))
    np.testing.assert_array_equal(full.acceptance_steps, np.arange(0, 60, every))
    assert np.isfinite(full.acceptance).all() and (full.acceptance > 0).all()
    parts = [full]
    if split:
        a = run(config=RunConfig("sgld", 4, split, 16, acceptance_every=every), return_state=True)
        parts = [a, run(config=RunConfig("sgld", 4, 60 - split, 16, acceptance_every=every), init_state=a.final_state)]
    steps = np.concatenate([p.acceptance_steps for p in parts])
    np.testing.assert_array_equal(steps, full.acceptance_steps)
    np.testing.assert_allclose(np.concatenate([p.acceptance for p in parts], 1), full.acceptance, rtol=1e-5)
    np.testing.assert_allclose(np.concatenate([p.loss_trace for p in parts], 1), full.loss_trace, rtol=1e-6, atol=1e-6)

@pytest.mark.slow
def test_memory_and_traces_do_not_grow_with_steps():
    data = jax.tree.map(jnp.asarray, DATA)
    keys = jnp.asarray(chain_keys(0, 4, "counter_hash"))
    hp = Hyperparameters(*(jnp.asarray(np.broadcast_to(np.asarray(v, np.float32), (4,))) for v in HP))
    temp = {}
    for steps in (50, 5000):
        config = RunConfig("sgld", 4, steps, 16, acceptance_every=10)
        args = ProgramInputs(PARAMS, None, data, hp, keys, np.int32(0), None, None)
        compiled, _ = compiled_program(loss, None, config, args, return_states=True)
        stats = compiled.memory_analysis()
        temp[steps] = (stats.temp_size_in_bytes, stats.output_size_in_bytes)
    # only the scalar traces grow: 2 floats per chain-step (loss, acceptance) plus slack
    scalar_growth = (5000 - 50) * 4 * 2 * 4
    assert temp[5000][1] - temp[50][1] <= scalar_growth + 1024
    assert temp[5000][0] - temp[50][0] <= 2 * scalar_growth + 64 * 1024
    result = run(return_state=True)
    assert result.loss_trace.shape == (4, 60)
    assert jax.tree.map(np.shape, result.final_state.sampler_state.position) == {"a": (4, 4), "b": (4,)}
