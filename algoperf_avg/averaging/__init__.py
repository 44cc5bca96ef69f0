"""Weight averaging: online optax transforms (`online`) and post-hoc sweeps (`posthoc`).

``from algoperf_avg import averaging`` gives the transforms directly:
``averaging.lawa``, ``averaging.ema``, ``averaging.swa`` and
``averaging.averaged_params``.
"""

from algoperf_avg.averaging.online import (
    EmaWeightsState,
    LawaState,
    SwaState,
    averaged_params,
    ema,
    has_average,
    lawa,
    swa,
)

__all__ = [
    "EmaWeightsState", "LawaState", "SwaState", "averaged_params", "ema",
    "has_average", "lawa", "swa",
]
