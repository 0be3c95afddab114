"""Chains sharded across devices (and hosts) with JAX's own engine.

A run with C chains on D devices puts C/D chains on each device: a
one-dimensional :class:`jax.sharding.Mesh` with the axis ``"chain"``, and the
sampling program wrapped in :func:`jax.shard_map`, so every device runs the
single-device program on its own chains with no communication. Per-chain
inputs (keys, ε/nβ/γ, starting points, per-chain centers) are split along
``"chain"``; the data and a shared center are replicated. Chains have their
own keys, so a sharded run gives the same numbers as a single-device run.

Multi-host: call :func:`jax.distributed.initialize` in every process first;
``jax.devices()`` is then the global list, the mesh spans all hosts, inputs
are built with :func:`jax.make_array_from_callback` (every process holds the
same host copy) and outputs are gathered to every process. See
docs/performance.md.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

CHAIN_AXIS = "chain"
Devices = None | str | int | Sequence[Any] | Mesh


def resolve_devices(devices: Devices, num_chains: int) -> list | None:
    """The devices to shard ``num_chains`` chains over, or None for one device.

    ``devices``: None (automatic: the most devices, up to all, whose number
    divides ``num_chains``: 4 chains on 16 CPU cores use 4, 3 chains on 2 use
    one; with several processes, all devices when they divide the chains,
    else none), "all" (every device; an error if
    they do not divide ``num_chains``), an int k (the first k devices), a list
    of devices, or a :class:`Mesh` with a ``"chain"`` axis.
    """
    if devices is None:
        available = jax.devices()
        if jax.process_count() > 1:  # every process must hold chains: all devices or none
            if num_chains % len(available):
                return None
            devs = available
        else:
            count = max(k for k in range(1, len(available) + 1) if num_chains % k == 0)
            devs = available[:count]
    else:
        devs = requested_devices(devices)
    if len(devs) == 1:
        return None
    if num_chains % len(devs):
        raise ValueError(
            f"num_chains={num_chains} is not divisible by the {len(devs)} devices; "
            f"use a multiple of {len(devs)} chains, or fewer devices"
        )
    return devs


def requested_devices(devices: Devices) -> list:
    """The devices an explicit ``devices`` setting names ("all", an int k, a list, a Mesh); not None (automatic)."""
    if isinstance(devices, Mesh):
        return list(devices.devices.flat)
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(f'devices must be None, "all", an int, a list of devices or a Mesh; got {devices!r}')
        return jax.devices()
    if isinstance(devices, (int, np.integer)):
        available = jax.devices()
        if not 1 <= devices <= len(available):
            raise ValueError(f"devices={devices}: there are {len(available)} devices")
        return available[: int(devices)]
    devs = list(devices)
    if not devs:
        raise ValueError("devices is an empty list")
    return devs


def chain_mesh(devices: Devices, num_chains: int) -> Mesh | None:
    """A 1-D mesh with axis ``"chain"`` over the resolved devices (None: no sharding)."""
    if isinstance(devices, Mesh):
        if devices.axis_names != (CHAIN_AXIS,):
            raise ValueError(f"a Mesh passed as devices must have the single axis {CHAIN_AXIS!r}, got {devices.axis_names}")
        resolve_devices(devices, num_chains)
        return devices
    devs = resolve_devices(devices, num_chains)
    if devs is None:
        return None
    return Mesh(np.array(devs), (CHAIN_AXIS,))


def per_chain(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Sharding that splits dimension ``axis`` along the chains."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), CHAIN_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that puts a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def put(tree, sharding: NamedSharding):
    """Place a pytree of host or device arrays with ``sharding`` (works across hosts)."""

    def one(x):
        if x is None:
            return None
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def fetch(x) -> np.ndarray:
    """A (possibly sharded, possibly multi-host) array as one host numpy array on every process."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
