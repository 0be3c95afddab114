"""slt-jax: singular learning theory quantities for real training runs, in JAX.

Public API (stable names):
    estimate_llc, LLCResult           local learning coefficient at a checkpoint (restrict=: weight-refined)
    estimate_llc_components           refined LLCs of many components in one compiled program
    attention_heads, heads, layers    name components (slt.components)
    bayesian_influence, susceptibilities, bayes_quartet   posterior observables (BIF, χ, quartet and WAIC)
    observable_trajectory             any of them over checkpoints (resumable)
    llc_trajectory, Trajectory        LLC over a sequence of checkpoints (resumable)
    detect_transitions, Transition    phase transitions in trajectories
    free_energy, FreeEnergyResult     WBIC and thermodynamic integration
    fit_learning_coefficient          (λ, m) from a temperature sweep (experimental)
    calibrate, Calibration            step-size calibration (step_size="auto")
    AutoBurnin                        burn-in until λ̂ levels off (num_burnin="auto")
    scale_localization                γ on the scale of the weights (localization="scale")
    from_nnx, from_linen              Flax adapters to (loss_fn, params)
    from_equinox                      Equinox adapter (eqx.partition)
    from_torch                        PyTorch / Hugging Face modules through torchax (extra "torch")
    checkpoints, load_params          reading checkpoints (safetensors, msgpack, npz, orbax; torch state dicts)
    theory                            closed-form learning coefficients
    models                            model organisms (DLN, TMS, modular arithmetic)
"""

import importlib

from slt import theory
from slt.adapters import from_equinox, from_linen, from_nnx
from slt.burnin import AutoBurnin
from slt.cpu import use_cpu_cores
from slt.diagnostics import SLTWarning
from slt.fit import LearningCoefficientFit, fit_learning_coefficient
# Eager: the function shares its name with its module, and a lazy export would be
# shadowed by the module object after any `from slt.free_energy import ...`.
from slt.free_energy import FreeEnergyResult, FreeEnergyTrajectory, free_energy, free_energy_trajectory
from slt.llc import LLCResult, estimate_llc, estimate_llc_components
from slt.settings import LLCConfig, default_nbeta
from slt.localization import scale_localization
from slt.samplers.base import SAMPLERS
from slt.validation import SLTInputError

__version__ = "0.1.0"

# Loaded on first use, so that `import slt` stays light (no matplotlib, orbax, torch).
_LAZY = {
    "llc_trajectory": "slt.trajectory",
    "Trajectory": "slt.trajectory",
    "detect_transitions": "slt.transitions",
    "stage_boundaries": "slt.transitions",
    "Transition": "slt.transitions",
    "calibrate": "slt.calibration",
    "bayesian_influence": "slt.influence",
    "Influence": "slt.influence",
    "susceptibilities": "slt.influence",
    "Susceptibilities": "slt.influence",
    "bayes_quartet": "slt.quartet",
    "observable_trajectory": "slt.observable_sweep",
    "ObservableTrajectory": "slt.observable_sweep",
    "BayesQuartet": "slt.quartet",
    "attention_heads": "slt.components",
    "heads": "slt.components",
    "layers": "slt.components",
    "Calibration": "slt.calibration",
    "load_params": "slt.checkpoints",
    "save_params": "slt.checkpoints",
    "list_checkpoints": "slt.checkpoints",
    "checkpoints": "slt.checkpoints",
    "from_torch": "slt.torch_bridge",  # imports torch and torchax only when used
    "models": "slt.models",
}
_LAZY_MODULES = ("models", "checkpoints")


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = module if name in _LAZY_MODULES else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'slt' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AutoBurnin",
    "FreeEnergyResult",
    "FreeEnergyTrajectory",
    "LearningCoefficientFit",
    "fit_learning_coefficient",
    "free_energy",
    "free_energy_trajectory",
    "LLCConfig",
    "LLCResult",
    "SAMPLERS",
    "SLTInputError",
    "SLTWarning",
    "default_nbeta",
    "estimate_llc",
    "estimate_llc_components",
    "scale_localization",
    "from_equinox",
    "from_linen",
    "from_nnx",
    "theory",
    "use_cpu_cores",
    *_LAZY,
]
