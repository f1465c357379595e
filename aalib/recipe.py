"""The training recipe of a :class:`~aalib.config.TrainConfig`: SGD, the learning-rate schedule
and the loss.

Zagoruyko & Komodakis 2016 (Wide Residual Networks, https://arxiv.org/abs/1605.07146) train with
SGD with Nesterov momentum and multiply the learning rate by 0.2 at epochs 60, 120 and 160.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig

__all__ = ["build_criterion", "build_optimizer", "build_scheduler", "lr_factor"]


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of ``config.lr`` for the optimizer step with 0-based index ``step``.

    Linear warm-up over ``warmup_epochs`` (if any), then: ``cosine`` decays to 0 at the last step
    (per step, as the study's CosineAnnealingLR stepped per iteration); ``multistep`` multiplies by
    ``gamma`` at each epoch in ``milestones`` (Z&K: x0.2 at 60/120/160); ``constant`` keeps 1.
    """
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if config.schedule == "multistep":
        epoch = step // steps_per_epoch  # 0-based epoch of this step
        return config.gamma ** sum(epoch >= m for m in config.milestones)
    return 1.0


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD over all of ``model``'s parameters with the config's lr, momentum and weight decay."""
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )


def build_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per optimizer step; its state is (last_epoch = steps taken) plain numbers."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step, steps_per_epoch))


def build_criterion(config: TrainConfig) -> nn.Module:
    """Cross-entropy with label smoothing; mean over the batch (multiplied back by n to sum)."""
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
