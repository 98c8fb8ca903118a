"""torch.nn's normalization modules on the derived kernels.

Each class subclasses torch's own module, so constructor arguments, parameters,
buffers and state_dict keys are torch's; only ``forward`` calls generated.torch.functional.
``replace_norm_layers(model)`` swaps a model's torch.nn normalization layers for these in
place, keeping their parameters and buffers (the same tensors: an optimizer keeps working).
``print(model)`` names them ``generated.torch.BatchNorm2d(...)``, so a replaced layer shows.
"""
import torch

from . import functional as F

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm", "InstanceNorm1d",
           "InstanceNorm2d", "InstanceNorm3d", "RMSNorm", "replace_norm_layers"]


class _Derived:
    def _get_name(self):
        """The name print(model) shows: torch's class name, marked as the derived module."""
        return f"generated.torch.{type(self).__name__}"


class _BatchNormForward(_Derived):
    def forward(self, input):
        """torch.nn.modules.batchnorm._BatchNorm.forward, with the derived batch_norm."""
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        training = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if track else None, self.running_var if track else None,
                            self.weight, self.bias, training, factor, self.eps)


class BatchNorm1d(_BatchNormForward, torch.nn.BatchNorm1d):
    pass


class BatchNorm2d(_BatchNormForward, torch.nn.BatchNorm2d):
    pass


class BatchNorm3d(_BatchNormForward, torch.nn.BatchNorm3d):
    pass


class LayerNorm(_Derived, torch.nn.LayerNorm):
    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class GroupNorm(_Derived, torch.nn.GroupNorm):
    def forward(self, input):
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)


class RMSNorm(_Derived, torch.nn.RMSNorm):
    def forward(self, input):
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)


class _InstanceNormForward(_Derived):
    def forward(self, input):
        """torch.nn.modules.instancenorm._InstanceNorm.forward, with the derived instance_norm."""
        self._check_input_dim(input)
        unbatched = input.dim() == self._get_no_batch_dim()
        if unbatched:
            input = input.unsqueeze(0)
        out = F.instance_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                              self.training or not self.track_running_stats, self.momentum if self.momentum is not None
                              else 0.0, self.eps)
        return out.squeeze(0) if unbatched else out


class InstanceNorm1d(_InstanceNormForward, torch.nn.InstanceNorm1d):
    pass


class InstanceNorm2d(_InstanceNormForward, torch.nn.InstanceNorm2d):
    pass


class InstanceNorm3d(_InstanceNormForward, torch.nn.InstanceNorm3d):
    pass


_REPLACEMENTS = {torch.nn.BatchNorm1d: BatchNorm1d, torch.nn.BatchNorm2d: BatchNorm2d,
                 torch.nn.BatchNorm3d: BatchNorm3d, torch.nn.LayerNorm: LayerNorm,
                 torch.nn.GroupNorm: GroupNorm, torch.nn.RMSNorm: RMSNorm,
                 torch.nn.InstanceNorm1d: InstanceNorm1d, torch.nn.InstanceNorm2d: InstanceNorm2d,
                 torch.nn.InstanceNorm3d: InstanceNorm3d}


def _replacement(module):
    cls = _REPLACEMENTS.get(type(module))
    if cls is None:
        return None
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)  # the same parameters, buffers, hooks and settings
    return new


def replace_norm_layers(model):
    """Swap every torch.nn normalization layer of ``model`` (and ``model`` itself) for the derived
    one; returns the model (a new object only when ``model`` itself is such a layer)."""
    top = _replacement(model)
    if top is not None:
        return top
    for name, child in list(model.named_children()):
        setattr(model, name, replace_norm_layers(child))
    return model
