"""Batched members' training losses without vmap, for a network that is a plain stack of layers.

Under `vmap` a step of 5 digits-MLP members cost about 3.7 single-model steps: torch.func's
batching rules for `linear` and its backward were most of it (profiled). A network that is an
`nn.Sequential` of Flatten, Linear, elementwise activations and Dropout runs instead as batched
matrix products over the members' stacked weights (`baddbmm`): the same dot products as
`F.linear`, one kernel per layer for all members. The loss is the module's own `task_loss`, once
per member; for classification, task_loss's mean cross-entropy (label smoothing included) of all
members in one call. Anything else returns None and goes through vmap (bench.batched).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.models.base import SupervisedModule

ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.Identity)
MemberLosses = Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor]


def stacked_losses(module: nn.Module, prefix: str, *, shared_batch: bool) -> MemberLosses | None:
    """losses(params, x, y) -> one training loss per member. params: stacked along dim 0, named
    `prefix` + the module's own names (`net.0.weight`, ...); x, y: one batch for all members
    (`shared_batch`: full-batch runs) or one per member along dim 0. None where the network is
    not a plain stack."""
    if not isinstance(module, SupervisedModule) or type(module).forward is not SupervisedModule.forward \
            or type(module).training_loss is not SupervisedModule.training_loss:
        return None
    net = module.net
    if not isinstance(net, nn.Sequential) or not all(_plain(layer) for layer in net):
        return None

    def losses(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = next(iter(params.values())).shape[0]
        h = x.expand(k, *x.shape) if shared_batch else x
        for i, layer in enumerate(net):
            if isinstance(layer, nn.Flatten):
                h = h.flatten(2)  # each member's batch: [K, B, ...] -> [K, B, features]
            elif isinstance(layer, nn.Linear):
                name = f"{prefix}net.{i}"
                weight, bias = params[f"{name}.weight"].transpose(1, 2), params.get(f"{name}.bias")
                h = torch.bmm(h, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), h, weight)
            elif isinstance(layer, nn.Dropout):
                h = F.dropout(h, layer.p, layer.training)  # a mask of its own for every member
            else:
                h = layer(h)
        targets = y.expand(k, *y.shape) if shared_batch else y
        if module.task == "multiclass":  # task_loss's mean cross-entropy, all members in one call (~1/3 of a step)
            per_example = F.cross_entropy(h.flatten(0, 1), targets.flatten(0, 1), reduction="none",
                                          label_smoothing=module.label_smoothing)
            return per_example.view(k, -1).mean(1)
        return torch.stack([module.task_loss(h[m], targets[m], smoothing=module.label_smoothing) for m in range(k)])

    return losses


def _plain(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Flatten):
        return layer.start_dim == 1 and layer.end_dim == -1
    return type(layer) in (nn.Linear, nn.Dropout, *ELEMENTWISE)
