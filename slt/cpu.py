"""Use every CPU core for chains: one XLA host device per core.

On CPU, XLA runs a program on one device and parallelises only inside large
operations; the small matrix products of an SGLD step leave the other cores
mostly idle. With one host device per core, :func:`slt.sampling.run_chains`
shards the chains across them (:mod:`slt.sharding`; the same numbers as one
device, up to float32 rounding in the matrix products), and every core runs
its own chains. Measured on 2 cores (docs/benchmarks.md): SGLD 1.4× to 2.4×
more chain-steps per second on small models, 1.0-1.1× on a 1M-parameter MLP.

JAX fixes its devices when it first runs anything, so this must be called
right after ``import slt``, before any JAX computation. The ``slt`` command
line does it by default (``SLT_CPU_DEVICES``). The data are replicated on
every CPU device that runs chains; a run uses the most devices whose number
divides its number of chains (:func:`slt.sharding.resolve_devices`).

:func:`cpu_compiler_options` is the XLA code generation slt compiles its CPU
sampling programs with: 512-bit vectors on AMD CPUs with AVX-512 (XLA's
default is 256), ``SLT_CPU_VECTOR_WIDTH`` to choose.
"""

from __future__ import annotations

import functools
import os
import re

import jax

ENV_VAR = "SLT_CPU_DEVICES"  # for the command line: "auto" (default), a number, or "off"
VECTOR_WIDTH_ENV = "SLT_CPU_VECTOR_WIDTH"  # "auto" (default), "512", "256", or "xla" (XLA's own choice)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _forced_by_xla_flags() -> int | None:
    match = re.search(r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
    return int(match.group(1)) if match else None


def use_cpu_cores(count: int | None = None) -> int:
    """Give JAX ``count`` CPU devices (default: one per available core) and return the number in force.

    Sets ``jax_num_cpu_devices``. A device count already forced by
    ``XLA_FLAGS`` (``--xla_force_host_platform_device_count``) is kept and
    returned. Affects only the CPU backend: on a GPU
    machine chains still shard over the GPUs.

    Raises:
      ValueError: ``count`` is not a positive integer.
      RuntimeError: JAX has already run something with a different number of
        CPU devices; call this right after the imports instead.
    """
    if count is None:
        count = available_cores()
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer (CPU devices), got {count!r}")
    forced = _forced_by_xla_flags()
    if forced is not None:
        return forced
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX already fixed its devices
        have = len(jax.devices("cpu"))
        if have != count:
            raise RuntimeError(
                f"slt.use_cpu_cores({count}): JAX already started with {have} CPU device(s). Call "
                "slt.use_cpu_cores() right after `import slt`, before any JAX computation, or set "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={count} before starting Python."
            ) from None
    return count


def use_cpu_cores_from_env(default: str = "auto") -> int | None:
    """The command line's setting: ``SLT_CPU_DEVICES`` = "auto" (one device per core), a number, or "off".

    Returns the device count in force, or None when off. "auto" keeps the
    devices of a JAX that is already running; a bad value is a ValueError
    naming the variable.
    """
    value = os.environ.get(ENV_VAR, default).strip().lower()
    if value in ("off", "0", "no", "false"):
        return None
    if value == "auto":
        try:
            return use_cpu_cores()
        except RuntimeError:  # JAX already running (main() called from Python): keep its devices
            try:
                return len(jax.devices("cpu"))
            except RuntimeError:  # no CPU backend (JAX_PLATFORMS without cpu)
                return None
    if not value.isdigit():
        raise ValueError(f'{ENV_VAR} must be "auto", "off" or a positive number of CPU devices, got {value!r}')
    return use_cpu_cores(int(value))


# ----------------------------------------------------------------------------
# vector width of XLA's CPU code
# ----------------------------------------------------------------------------


@functools.cache
def cpu_identity(path: str = "/proc/cpuinfo") -> tuple[str, frozenset]:
    """(vendor, instruction-set flags) of this machine's first CPU, from /proc/cpuinfo.

    ("", frozenset()) where there is none (not Linux); ARM CPUs have no ``vendor_id``
    line and give "". Either way :func:`preferred_vector_width` keeps XLA's default.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read(1 << 16)
    except OSError:
        return "", frozenset()
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", text, re.M)
    flags = re.search(r"^flags\s*:(.*)$", text, re.M)
    return (vendor.group(1) if vendor else ""), frozenset(flags.group(1).split() if flags else ())


def preferred_vector_width(vendor: str, flags: frozenset[str] | set[str], setting: str = "auto") -> int | None:
    """The vector width (bits) for XLA's CPU code, or None for XLA's own choice (256 bits).

    "auto": 512 on AMD CPUs with AVX-512 (Zen 4 and later run 512-bit
    instructions at full clock, so the elementwise work of a step, noise and
    update, needs half the instructions; the grokking MLP's SGLD step ran
    7-19% faster, the other benchmark models within ±3%, docs/performance.md);
    XLA's choice elsewhere, since some Intel CPUs lower their clock for
    512-bit code. "512" or "256" force a width; "512" on a CPU without
    AVX-512 leaves XLA's default (there is no 512-bit code to prefer).
    """
    value = str(setting).strip().lower()
    if value not in ("auto", "512", "256", "xla"):
        raise ValueError(f'{VECTOR_WIDTH_ENV} must be "auto", "512", "256" or "xla", got {setting!r}')
    has_512 = "avx512f" in flags
    if value == "xla" or (value == "512" and not has_512):
        return None
    if value == "auto":
        return 512 if has_512 and vendor == "AuthenticAMD" else None
    return int(value)


_rejected_options: set = set()  # option names this XLA does not know (an older or newer jaxlib)


def cpu_compiler_options(platform: str = "cpu") -> dict:
    """XLA options for slt's sampling programs on ``platform`` (``SLT_CPU_VECTOR_WIDTH``, default "auto"; see
    :func:`preferred_vector_width`). Empty off the CPU, when XLA's defaults apply, or when this XLA refused
    the option (:func:`compile_lowered`): the options in force."""
    width = preferred_vector_width(*cpu_identity(), os.environ.get(VECTOR_WIDTH_ENV, "auto"))
    if platform != "cpu" or width is None:
        return {}
    return {k: v for k, v in {"xla_cpu_prefer_vector_width": width}.items() if k not in _rejected_options}


def compile_lowered(lowered, options: dict):
    """``lowered.compile(compiler_options=options)``; without the options if this XLA does not know one of them.

    The options only choose code generation, so a jaxlib without them compiles the same program with its
    defaults instead of failing (once per option name; later compiles skip it).
    """
    while True:
        options = {k: v for k, v in options.items() if k not in _rejected_options}
        if not options:
            return lowered.compile()
        try:
            return lowered.compile(compiler_options=options)
        except jax.errors.JaxRuntimeError as err:
            unknown = re.search(r"No such compile option: '([^']+)'", str(err))
            if unknown is None or unknown.group(1) not in options:
                raise
            _rejected_options.add(unknown.group(1))  # drop it, keep the others, try again
