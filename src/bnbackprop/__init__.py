"""bnbackprop: batch norm's backward pass, derived, drawn and checked.

The book "Backprop through Batch Norm" imports everything it shows from here.
"""

from .batchnorm import (
    Cache,
    EvalCache,
    backward,
    backward_eval,
    backward_staged,
    forward,
    forward_eval,
    normalize_forward,
    update_running_stats,
)
from .bngraph import BNGraph, batchnorm_graph, engine_backward
from .gradcheck import (
    check_vjp,
    numerical_gradient,
    numerical_jacobian,
    rel_error,
    scaled_error,
    vjp_directional_error,
)
from .names import NAME_TABLE, markdown_table, symbol

__version__ = "0.1.0"

__all__ = [
    "BNGraph",
    "Cache",
    "EvalCache",
    "NAME_TABLE",
    "backward",
    "backward_eval",
    "backward_staged",
    "batchnorm_graph",
    "check_vjp",
    "engine_backward",
    "forward",
    "forward_eval",
    "markdown_table",
    "normalize_forward",
    "numerical_gradient",
    "numerical_jacobian",
    "rel_error",
    "scaled_error",
    "symbol",
    "update_running_stats",
    "vjp_directional_error",
]
