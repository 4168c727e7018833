"""jitloss: JIT-compiled loss kernels (softmax family, cross-entropy, margin losses).

One public function per operation serves NumPy inputs on the CPU (numba ``njit``) and
CUDA arrays on the GPU (``numba.cuda``).
"""

from .cross_entropy import cross_entropy, cross_entropy_with_grad
from .margin import (
    max_margin_loss,
    max_margin_loss_with_grad,
    multi_margin_loss,
    multi_margin_loss_with_grad,
    multiclass_hinge_loss,
    multiclass_hinge_loss_with_grad,
)
from .softmax import log_softmax, log_softmax_backward, logsumexp, softmax, softmax_backward

__version__ = "0.1.0"

__all__ = [
    "cross_entropy",
    "cross_entropy_with_grad",
    "log_softmax",
    "log_softmax_backward",
    "logsumexp",
    "max_margin_loss",
    "max_margin_loss_with_grad",
    "multi_margin_loss",
    "multi_margin_loss_with_grad",
    "multiclass_hinge_loss",
    "multiclass_hinge_loss_with_grad",
    "softmax",
    "softmax_backward",
]
