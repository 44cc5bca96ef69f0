"""``algoperf.spec``: the harness's own spec (one set of enums, errors and types)."""

from algoperf_avg.spec import *  # noqa: F403
from algoperf_avg.spec import (  # noqa: F401  (names star-import does not bring)
    ForwardPassMode,
    LossType,
    ParameterType,
    ShapeTuple,
    TrainingCompleteError,
    Workload,
)
