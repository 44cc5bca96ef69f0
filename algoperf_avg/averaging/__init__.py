"""Weight averaging: online optax transforms (`online`) and post-hoc sweeps (`posthoc`).

``from algoperf_avg import averaging`` gives the transforms directly:
``averaging.lawa``, ``averaging.ema``, ``averaging.power_ema``, ``averaging.swa``
and ``averaging.averaged_params``; `power_ema` widths convert with
``averaging.sigma_rel_to_gamma`` / ``gamma_to_sigma_rel``.
"""

from algoperf_avg.averaging.online import (
    EmaWeightsState,
    LawaState,
    PowerEmaState,
    SwaState,
    averaged_params,
    ema,
    gamma_to_sigma_rel,
    has_average,
    lawa,
    power_ema,
    sigma_rel_to_gamma,
    swa,
)

__all__ = [
    "EmaWeightsState", "LawaState", "PowerEmaState", "SwaState", "averaged_params",
    "ema", "gamma_to_sigma_rel", "has_average", "lawa", "power_ema",
    "sigma_rel_to_gamma", "swa",
]
