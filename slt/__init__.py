"""slt-jax: singular learning theory quantities for real training runs, in JAX.

Public API (stable names):
    estimate_llc, LLCResult     local learning coefficient at a checkpoint
    from_nnx, from_linen        Flax adapters to (loss_fn, params)
    theory                      closed-form learning coefficients
"""

from slt import theory
from slt.adapters import from_linen, from_nnx
from slt.diagnostics import SLTWarning
from slt.llc import LLCConfig, LLCResult, default_nbeta, estimate_llc
from slt.samplers.base import SAMPLERS
from slt.validation import SLTInputError

__version__ = "0.1.0"

__all__ = [
    "LLCConfig",
    "LLCResult",
    "SAMPLERS",
    "SLTInputError",
    "SLTWarning",
    "default_nbeta",
    "estimate_llc",
    "from_linen",
    "from_nnx",
    "theory",
]
