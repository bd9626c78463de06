"""What scoring needs to know about a model, walked once and cached, and how it hands the model back.

A search scores many small networks, so per-call Python work counts: walking the module tree,
`model.train()` and restoring what scoring touched cost more than the statistics on small models.
A `ModelPlan` walks the tree once and keeps the lists that scoring needs. It is cached per model
and dropped as soon as anything could have changed the tree: torch calls a global registration
hook whenever any module, parameter or buffer is assigned anywhere, and each such call starts a
new generation that invalidates every cached plan. `requires_grad` flips and weights replaced
behind `nn.Module`'s back are checked on every use. (A submodule removed with `del` is not seen:
its layers then show up as "unused" in `skipped` and the score is unchanged.)
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from zico_fast.layers import LayerSelector, SelectedLayer, named_modules_fast, no_scorable_layer, select_layers
from zico_fast.layout import hits_cpu_conv_defect, nchw_strides

_generation = 0
_plans: "weakref.WeakKeyDictionary[nn.Module, ModelPlan]" = weakref.WeakKeyDictionary()
_MAX_CACHED = 16  # plans hold submodules: bound what a model with a reference cycle could pin


def _new_generation(*_args) -> None:
    global _generation
    _generation += 1


_hooks_installed = False


def _install_hooks() -> None:
    global _hooks_installed
    if not _hooks_installed:
        from torch.nn.modules import module as module_api

        module_api.register_module_module_registration_hook(_new_generation)
        module_api.register_module_parameter_registration_hook(_new_generation)
        module_api.register_module_buffer_registration_hook(_new_generation)
        _hooks_installed = True


def _is_stock_batchnorm(module: nn.Module) -> bool:
    """A torch BatchNorm whose forward skips the running-statistics update when
    track_running_stats is False, normalising with the batch statistics exactly as it would anyway."""
    return isinstance(module, _BatchNorm) and type(module).forward is _BatchNorm.forward


# The ModelPlan fields that are lists in walk order: a joined plan concatenates them part by part.
# The two that most models leave empty come last (a joiner may skip trailing columns empty everywhere).
JOINED_LISTS = ("layers", "weight_checks", "submodules", "params", "batchnorms", "batchnorm_flags", "conv_weights",
                "other_buffers", "strided_1x1")


@dataclass
class ModelPlan:
    generation: int
    selector: LayerSelector
    layers: list[SelectedLayer]
    skipped: dict[str, str]
    weight_checks: list[tuple[nn.Module, nn.Parameter, bool]]  # (owner, weight, requires_grad) as selected
    submodules: list[nn.Module]  # every module but the root (the plan must not keep the root alive)
    params: list[nn.Parameter]
    batchnorms: list[nn.Module]  # stock BatchNorms: running statistics left alone while scoring
    batchnorm_flags: list[tuple[nn.Module, object]]  # every stock BatchNorm's track_running_stats as built
    other_buffers: list[torch.Tensor]  # buffers a forward may write that we must copy to restore
    custom_train: bool  # some module overrides train(): call model.train() instead of setting flags
    strided_1x1: list[tuple[str, nn.Conv2d]]  # the strided 1x1 convs that hit the CPU defect (zico_fast.layout)
    conv_weights: list[torch.Tensor]  # every Conv2d's weight Parameter

    @classmethod
    def build(cls, model: nn.Module, selector: LayerSelector) -> "ModelPlan":
        plan = cls.of_part(named_modules_fast(model), selector, includes_root=True)
        if not plan.layers:
            raise no_scorable_layer(selector)
        return plan

    @classmethod
    def of_part(cls, named: list[tuple[str, nn.Module]], selector: LayerSelector,
                includes_root: bool) -> "ModelPlan":
        """The plan of a stretch of a model's named-module walk (names qualified as in the model);
        `joined` puts stretches together. `includes_root`: named[0] is the model itself."""
        layers, skipped = select_layers(None, selector, named, allow_none=True)
        modules = [module for _, module in named]
        by_name = dict(named)
        frozen = [(by_name[name], getattr(by_name[name], "weight", None)) for name, why in skipped.items()
                  if why.startswith("frozen")]
        checks = [(by_name[layer.name], layer.weight, True) for layer in layers] + \
                 [(module, weight, False) for module, weight in frozen]
        params = list({id(p): p for m in modules for p in m._parameters.values() if p is not None}.values())
        submodules = modules[1:] if includes_root else modules
        stock = [m for m in submodules if _is_stock_batchnorm(m)]  # a root BN: buffers copied instead
        flags = [(m, m.__dict__.get("track_running_stats")) for m in stock]
        batchnorms = [m for m, tracking in flags if tracking is True]
        skip = {id(b) for m in batchnorms for b in m._buffers.values() if b is not None}
        buffers = list({id(b): b for m in modules for b in m._buffers.values()
                        if b is not None and id(b) not in skip}.values())
        custom_train = any(type(m).train is not nn.Module.train for m in modules)
        strided_1x1 = [(name, m) for name, m in named if hits_cpu_conv_defect(m)]
        return cls(_generation, selector, layers, skipped, checks, submodules, params, batchnorms, flags,
                   buffers, custom_train, strided_1x1,
                   # _parameters, not .weight: reading a parametrized weight (of a conv left out) runs it.
                   [w for _, m in named if isinstance(m, nn.Conv2d)
                    and isinstance(w := m._parameters.get("weight"), torch.Tensor)])

    def lists(self) -> tuple:
        """The plan's per-module lists, in JOINED_LISTS order."""
        return tuple(getattr(self, name) for name in JOINED_LISTS)

    @classmethod
    def joined(cls, selector: LayerSelector, lists: list[list], skipped: list[dict], custom_train: bool) -> "ModelPlan":
        """The plan of a model whose walk is several parts' walks one after another, for models
        assembled from parts that share no module or tensor: `lists` are the parts' `lists()`
        concatenated field by field, `skipped` their skipped dicts, `custom_train` any part's."""
        merged = {}
        for part in skipped:
            merged.update(part)
        return cls(generation=_generation, selector=selector, skipped=merged, custom_train=custom_train,
                   **dict(zip(JOINED_LISTS, lists)))

    def cpu_layout_hazard(self) -> str | None:
        """Name of a conv that hits torch's CPU channels_last defect (zico_fast.layout), if the model
        has one and is on the CPU: its passes must then run in contiguous tensors."""
        if not self.strided_1x1 or self.strided_1x1[0][1].weight.device.type != "cpu":
            return None
        return self.strided_1x1[0][0]

    def make_conv_weights_contiguous(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """Gives every conv weight not in NCHW strides NCHW data (same Parameter, same values) and
        returns [(weight, its former data)] for the caller to put back. Strides, not is_contiguous():
        a 1x1 weight is contiguous in both formats, yet torch picks its kernel by the strides.
        Checked per call: a .to(memory_format=...) changes layouts without registering anything."""
        swapped = []
        for weight in self.conv_weights:
            if weight.dim() == 4 and weight.stride() != nchw_strides(weight.shape):
                swapped.append((weight, weight.data))
                weight.data = weight.data.clone(memory_format=torch.contiguous_format)
        return swapped

    def is_current(self, selector: LayerSelector) -> bool:
        if self.generation != _generation or not (selector is self.selector or selector == self.selector):
            return False
        for module, weight, trainable in self.weight_checks:
            if weight.requires_grad is not trainable or module._parameters.get("weight", weight) is not weight:
                return False
        return all(m.__dict__.get("track_running_stats") is tracking for m, tracking in self.batchnorm_flags)

    def capture(self, model: nn.Module) -> "SavedState":
        return SavedState(
            in_eval=[m for m in self.submodules if not m.training] + ([] if model.training else [model]),
            grads=[(p, p.grad) for p in self.params if p.grad is not None],
            buffers=[b.clone() for b in self.other_buffers],
        )

    def enter_scoring_mode(self, model: nn.Module) -> None:
        """Train mode, without the BatchNorm running-statistics updates (they do not change a
        gradient: train-mode BatchNorm normalises with batch statistics). Undo with leave_scoring_mode."""
        if self.custom_train:
            model.train()
        else:  # what Module.train() does per module, without its recursive setattr walk
            for module in self.submodules:
                if not module.training:
                    module.__dict__["training"] = True
            model.__dict__["training"] = True
        for bn in self.batchnorms:
            bn.__dict__["track_running_stats"] = False

    def leave_scoring_mode(self) -> None:
        for bn in self.batchnorms:  # all True when the plan was built, and is_current checks it
            bn.__dict__["track_running_stats"] = True

    def clear_grads(self) -> None:
        for p in self.params:
            p.grad = None


@dataclass
class SavedState:
    """What scoring changes: the modules that were in eval mode, the `.grad`s that were set, and
    the buffers a forward may write (BN statistics are not among them: see enter_scoring_mode).
    Parameters are never written, so never copied. Restore after leaving scoring mode: every
    module is then in train mode and every gradient None, so only the exceptions are written."""

    in_eval: list[nn.Module]
    grads: list[tuple[nn.Parameter, torch.Tensor]]
    buffers: list[torch.Tensor]

    def restore(self, model: nn.Module, plan: ModelPlan) -> None:
        plan.clear_grads()
        for module in self.in_eval:
            module.__dict__["training"] = False
        for param, grad in self.grads:
            param.grad = grad
        if self.buffers:
            with torch.no_grad():
                torch._foreach_copy_(plan.other_buffers, self.buffers)


def install_plan(model: nn.Module, plan: ModelPlan) -> None:
    """Cache `plan` as `model`'s, for whoever changed the model behind nn.Module's back (no
    registration hook ran) and knows its plan: `plan` must be what `ModelPlan.build` would return."""
    _install_hooks()
    if len(_plans) >= _MAX_CACHED:
        _plans.clear()
    _plans[model] = plan


def model_plan(model: nn.Module, selector: LayerSelector = None) -> ModelPlan:
    """The cached plan of `model` for `selector`, rebuilt when the model may have changed."""
    _install_hooks()
    plan = _plans.get(model)
    if plan is None or not plan.is_current(selector):
        plan = ModelPlan.build(model, selector)
        install_plan(model, plan)
    return plan
