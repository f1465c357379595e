"""Models to analyse, each with the test images it is shown: from finished runs, or untrained.

The analysis notebooks (``notebooks/attention_maps.ipynb``, ``notebooks/receptive_fields.ipynb``)
load what ``make demo`` trained (``runs/long_range/<experiment>/seed<k>/``, see :mod:`aalib.runs`)
through :func:`load_sources`; when there is nothing finished there they fall back to freshly built
Simple-CNN / -AACNN / -LAACNN models (:func:`untrained_sources`) on the synthetic ``long_range``
task, so every notebook runs on a fresh checkout.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from ..attention import ATTENTION_KINDS
from ..data import ImageSplits, LongRangeTask, build_dataset
from ..models import attention_layers, build_model
from ..models.repro import study_name
from ..runs import Run, find_runs

__all__ = ["ModelSource", "from_run", "untrained_sources", "load_sources", "as_sources"]

# The fallback trio: Simple-CNN, Simple-AACNN, Simple-LAACNN (the reproduced study's shallow nets),
# every attention kind but the study's swapped-axes defect.
FALLBACK_ATTENTIONS: tuple[str | None, ...] = (None, *(kind for kind in ATTENTION_KINDS if kind != "linear_swapped"))


@dataclass
class ModelSource:
    """One architecture to analyse: its trained and untrained weights and the images to show it.

    ``trained`` is None for a model that was never trained (the notebooks' fallback); then
    :attr:`model` is the untrained one. Both models are in eval mode.
    """

    name: str
    untrained: nn.Module
    trained: nn.Module | None
    images: Tensor  # N, C, H, W uint8 test images
    labels: Tensor | None  # N int64, or None when unknown (attributions then explain the prediction)
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None  # (mean, std) of the run's loader, or None (/255 only)
    classes: list[str] = field(default_factory=list)

    @property
    def model(self) -> nn.Module:
        """The trained model when there is one, else the untrained one."""
        return self.trained if self.trained is not None else self.untrained

    @property
    def attention(self) -> str | None:
        """``"softmax"``, ``"linear"`` or None: the kind of the model's first AA/LAA layer."""
        layers = attention_layers(self.untrained)
        return layers[0][1].attention if layers else None

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def inputs(self, indices: int | Sequence[int] | slice | None = None) -> Tensor:
        """Model inputs for ``images[indices]`` (all by default), preprocessed as in training:
        ``/255``, then ``(x - mean) / std`` when the run normalised. Shape (B, C, H, W) float32."""
        if indices is None:
            indices = slice(None)
        elif isinstance(indices, int):
            indices = [indices]
        x = self.images[indices].float().div(255.0)  # B, C, H, W in [0, 1]
        if self.normalize is not None:
            mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in self.normalize)
            x = (x - mean) / std
        return x

    def __repr__(self) -> str:
        state = "trained" if self.trained is not None else "untrained only"
        return f"ModelSource({self.name!r}, attention={self.attention!r}, {state}, images={tuple(self.images.shape)})"


def _test_images(splits: ImageSplits, image_count: int) -> tuple[Tensor, Tensor]:
    images, labels = splits.test
    if image_count < 1 or image_count > len(labels):
        raise ValueError(f"image_count={image_count} must lie in [1, {len(labels)}] (test images of {splits.name})")
    return images[:image_count], labels[:image_count]


def from_run(run: Run, image_count: int, *, which: str = "best", splits: ImageSplits | None = None) -> ModelSource:
    """A finished run as a :class:`ModelSource`: ``run.model(which)``, ``run.untrained_model()`` and
    the first ``image_count`` images of its test split (``splits`` saves rebuilding the dataset)."""
    splits = run.dataset() if splits is None else splits
    images, labels = _test_images(splits, image_count)
    normalize = (tuple(splits.mean), tuple(splits.std)) if run.config.normalize else None
    return ModelSource(
        name=run.name,
        untrained=run.untrained_model(),
        trained=run.model(which),
        images=images,
        labels=labels,
        normalize=normalize,
        classes=list(splits.classes),
    )


def untrained_sources(
    image_count: int = 8,
    *,
    image_size: int = 32,
    attentions: Sequence[str | None] = FALLBACK_ATTENTIONS,
    seed: int = 0,
) -> dict[str, ModelSource]:
    """Freshly built ``repro_simple_cnn`` models (2 classes) with ``long_range`` test images.

    Keys are the study's names in snake case: ``simple_cnn``, ``simple_aacnn`` and ``simple_laacnn``
    for the default ``attentions``.
    Every model is seeded with ``seed``, so two calls build the same weights.
    """
    test_size = image_count + image_count % 2  # the generator balances classes: an even count
    splits = build_dataset(
        "long_range", image_size=image_size, train_size=64, val_size=0, test_size=test_size, seed=seed,
        receptive_field=min(LongRangeTask.receptive_field, image_size - 5),
    )
    images, labels = _test_images(splits, image_count)
    names = {kind: re.sub(r"\W+", "_", study_name("repro_simple_cnn", kind).lower()).strip("_") for kind in attentions}
    sources = {}
    for attention in attentions:
        torch.manual_seed(seed)
        model = build_model("repro_simple_cnn", attention=attention, num_classes=splits.num_classes).eval()
        sources[names[attention]] = ModelSource(
            name=names[attention],
            untrained=model,
            trained=None,
            images=images,
            labels=labels,
            normalize=(tuple(splits.mean), tuple(splits.std)),
            classes=list(splits.classes),
        )
    return sources


def load_sources(
    runs_dir: str | Path,
    image_count: int = 8,
    *,
    which: str = "best",
    image_size: int = 32,
) -> tuple[dict[str, ModelSource], str]:
    """Every finished run under ``runs_dir`` as a source keyed by its folder (relative to
    ``runs_dir``), or :func:`untrained_sources` when there is none; plus a line saying which.

    Runs that share a dataset configuration share one rebuilt dataset.
    """
    root = Path(runs_dir)
    runs = [run for run in find_runs(root) if run.finished] if root.is_dir() else []
    if not runs:
        note = (
            f"No finished runs under '{root}': using freshly built (untrained) repro_simple_cnn models "
            "(none/softmax/linear attention, 2 classes) on the long_range dataset."
        )
        return untrained_sources(image_count, image_size=image_size), note
    datasets: dict[str, ImageSplits] = {}
    sources = {}
    for run in runs:
        key = json.dumps([run.config.dataset, run.config.dataset_args, run.config.data_root], sort_keys=True)
        if key not in datasets:
            datasets[key] = run.dataset()
        sources[run.path.relative_to(root).as_posix()] = from_run(run, image_count, which=which, splits=datasets[key])
    return sources, f"Loaded {len(sources)} finished run(s) from '{root}' ({which} checkpoints)."


def reinitialised(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every submodule's ``reset_parameters()`` called (fresh weights,
    BN running statistics reset), in eval mode: the "untrained" twin of a bare model."""
    fresh = copy.deepcopy(model)
    for module in fresh.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return fresh.eval()


def as_sources(
    items: Mapping[str, ModelSource | Run | nn.Module] | Sequence[ModelSource | Run],
    *,
    image_count: int = 8,
    images: Tensor | None = None,
    labels: Tensor | None = None,
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> dict[str, ModelSource]:
    """What the explorers accept, as ``{name: ModelSource}``.

    A :class:`ModelSource` is kept; a :class:`~aalib.runs.Run` goes through :func:`from_run`
    (``image_count`` test images); a bare ``nn.Module`` (mapping values only) is taken as the
    model to explain, shown ``images`` (uint8, (N, C, H, W)) preprocessed with ``normalize``, its
    untrained twin built by :func:`reinitialised`. A list is keyed by each item's name.
    """
    named = dict(items) if isinstance(items, Mapping) else {item.name: item for item in items}
    if not named:
        raise ValueError("no models given")
    sources = {}
    for name, item in named.items():
        if isinstance(item, ModelSource):
            sources[name] = item
        elif isinstance(item, Run):
            sources[name] = from_run(item, image_count)
        elif isinstance(item, nn.Module):
            if images is None:
                raise ValueError(f"model {name!r} is a bare nn.Module: pass images= (uint8, (N, C, H, W)) to show it")
            sources[name] = ModelSource(
                name=name,
                untrained=reinitialised(item),
                trained=item.eval(),
                images=images,
                labels=labels,
                normalize=normalize,
            )
        else:
            raise TypeError(f"{name!r}: expected a ModelSource, Run or nn.Module, got {type(item).__name__}")
    return sources
