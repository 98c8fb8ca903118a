"""The PyTorch backend's template context: the kernel IR printed as torch operations.

One module per entry (templates/torch_kernels.py.jinja): the printed forward (training and test),
the running update in the convention of the entry's torch names (:class:`derive.forward.Facades`),
the compact backward as differentiable torch operations and again written into place
(``backward_train_fused``, for a backward that autograd does not record), the test-mode backward,
the derived double backward, the ``torch.autograd.Function`` classes around them, and the entry's
generic functional API and module.  Nothing here walks the derivation.
"""
from __future__ import annotations

from ...ir.program import KernelIR
from ..tensors import tensor_context
from .printer import torch_code, torch_fused_lines


def kernel_context(ir: KernelIR) -> dict:
    train = ir["backward_compact"]
    fused = torch_fused_lines([(a.target, a.value) for a in train.body], [p.name for p in ir.params])
    return {**tensor_context(ir, torch_code), "backward_train_fused": fused}
