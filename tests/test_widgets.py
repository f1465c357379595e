"""aalib.widgets: the explorers driven without a browser, by setting their controls' ``.value``."""

from __future__ import annotations


import pytest
import torch
from matplotlib.figure import Figure

from aalib.analysis import load_sources, untrained_sources
from aalib.analysis.maps import input_to_grid
from aalib.config import TrainConfig
from aalib.models import build_model
from aalib.train import train
import aalib.widgets
from aalib.widgets import AttentionMapExplorer, ReceptiveFieldExplorer


@pytest.fixture(scope="module")
def sources():
    return untrained_sources(4)  # simple_cnn, simple_aacnn, simple_laacnn on long_range, 32x32


@pytest.fixture(scope="module")
def trained_sources(tmp_path_factory):
    """One finished (one-epoch, 32-image) Simple-AACNN run, loaded as the notebooks load runs."""
    root = tmp_path_factory.mktemp("runs") / "long_range"
    config = TrainConfig(
        name="tiny_aacnn", model="repro_simple_cnn", model_args={"attention": "softmax"}, dataset="long_range",
        dataset_args={"image_size": 32, "train_size": 32, "val_size": 8, "test_size": 8},
        epochs=1, batch_size=16, augment=False, device="cpu", progress=False, log_every=0,
    )
    assert train(config, root / "tiny_aacnn" / "seed0")["status"] == "finished"
    loaded, note = load_sources(root, image_count=2)
    assert note.startswith("Loaded 1 finished run") and list(loaded) == ["tiny_aacnn/seed0"]
    return loaded


def test_attention_explorer_starts_with_aa_beside_laa(sources) -> None:
    explorer = AttentionMapExplorer(sources)
    assert set(explorer.sources) == {"simple_aacnn", "simple_laacnn"}  # the plain CNN has nothing to show
    assert explorer.model.value == "simple_aacnn" and explorer.compare.value == "simple_laacnn"
    assert explorer.query_y.continuous_update is False and explorer.query_x.continuous_update is False
    view = explorer.last
    assert isinstance(view.figure, Figure) and view.query == (16, 16) and set(view.maps) == {"simple_aacnn", "simple_laacnn"}
    assert view.layer == 1 and explorer.head.max == 3  # last layer, 4 heads
    for maps in view.maps.values():
        assert maps.grid_maps.shape == (1, 8, 8) and maps.image_maps.shape == (1, 32, 32)
        torch.testing.assert_close(maps.grid_maps.sum((-2, -1)), torch.ones(1))
    assert set(view.context) == {"simple_laacnn"} and view.context["simple_laacnn"].shape == (32, 8, 8)


def test_attention_explorer_follows_its_controls(sources) -> None:
    explorer = AttentionMapExplorer(sources)
    before = explorer.last.maps["simple_aacnn"]
    explorer.query_x.value = 2  # move the query to another grid cell
    after = explorer.last.maps["simple_aacnn"]
    assert explorer.last.query == (16, 2) and after.query_grid == (4, 0) != before.query_grid
    assert not torch.allclose(after.grid_maps, before.grid_maps)
    # the reported peak is the peak of the map: its cell holds the largest weight, on the image too
    cell = input_to_grid(*after.argmax[0], (32, 32), (8, 8))
    assert after.grid_maps[0, cell[0], cell[1]] == after.grid_maps.max()
    assert after.image_maps[0, after.argmax[0][0], after.argmax[0][1]] == after.image_maps.max()

    explorer.head.value = 3
    assert explorer.last.head == 3 and explorer.last.maps["simple_aacnn"].heads == (3,)
    context_axes = explorer.last.context_figures["simple_laacnn"].axes
    assert "head 3" in explorer.last.context_figures["simple_laacnn"]._suptitle.get_text()
    assert context_axes[0].get_ylabel() == "head 3"  # the row names the head shown, not its row index
    first_image = explorer.last.maps["simple_aacnn"].grid_maps
    explorer.image.value = 1
    assert explorer.last.image == 1
    assert not torch.allclose(explorer.last.maps["simple_aacnn"].grid_maps, first_image)

    explorer.layer.value = 0  # the stride-2 layer: a 16x16 grid, 2 heads
    assert explorer.head.max == 1 and explorer.head.value == 1
    maps = explorer.last.maps["simple_aacnn"]
    assert maps.grid_maps.shape == (1, 16, 16) and maps.query_grid == (8, 1)

    explorer.compare.value = "(none)"
    assert set(explorer.last.maps) == {"simple_aacnn"} and not explorer.last.context
    explorer.model.value = "simple_laacnn"  # LAA alone: its context maps come with it
    assert set(explorer.last.maps) == {"simple_laacnn"} and set(explorer.last.context) == {"simple_laacnn"}
    assert explorer.last.maps["simple_laacnn"].layer.attention == "linear"


def test_attention_explorer_takes_bare_models(sources) -> None:
    torch.manual_seed(0)
    model = build_model("repro_simple_cnn", attention="softmax", num_classes=2).eval()
    images = sources["simple_cnn"].images
    explorer = AttentionMapExplorer({"mine": model}, images=images, query=(0, 31))
    assert explorer.compare.value == "(none)" and explorer.last.maps["mine"].query_grid == (0, 7)
    with pytest.raises(ValueError, match="has an AA/LAA layer"):
        AttentionMapExplorer({"cnn": sources["simple_cnn"]})


def test_receptive_field_explorer_theoretical_then_button(sources) -> None:
    explorer = ReceptiveFieldExplorer(sources, ig_steps=4)
    view = explorer.last
    assert view.models == ("simple_cnn", "simple_aacnn", "simple_laacnn") and view.layer == 4
    assert view.theoretical["simple_cnn"][-1].local_size == 21 and view.theoretical["simple_aacnn"][-1].is_global
    assert view.erf is None and view.attribution_figure is None  # slow part waits for the button

    explorer.models.value = ("simple_cnn", "simple_aacnn")
    explorer.layer.value = 3
    explorer.erf_images.value = 2
    explorer.attribution_images.value = 1
    assert explorer.last.models == ("simple_cnn", "simple_aacnn") and explorer.last.layer == 3
    explorer.compute_button.click()
    view = explorer.last
    assert set(view.erf) == {"simple_cnn", "simple_aacnn"}
    assert set(view.erf["simple_cnn"]) == {"untrained"}  # untrained fallback models: nothing trained to compare
    plain, augmented = view.erf["simple_cnn"]["untrained"], view.erf["simple_aacnn"]["untrained"]
    assert plain.layer == augmented.layer == "features.4.conv" and plain.images == 2
    assert (plain.map > 0).sum() <= 13 * 13 and (augmented.map > 0).all()  # 13 px local vs global
    assert view.attributions["simple_aacnn"]["integrated gradients"].shape == (1, 3, 32, 32)
    assert view.attributions["simple_aacnn"]["Grad-CAM"].shape == (1, 32, 32)
    assert isinstance(view.erf_figure, Figure) and isinstance(view.attribution_figure, Figure)

    explorer.layer.value = 4  # a new choice drops the stale slow results
    assert explorer.last.layer == 4 and explorer.last.erf is None
    explorer.models.value = ()
    assert explorer.last is None and explorer.compute() is None


def test_explorers_on_a_finished_run(trained_sources) -> None:
    explorer = ReceptiveFieldExplorer(trained_sources, ig_steps=4)
    explorer.attribution_images.value = 1
    explorer.compute_button.click()
    states = explorer.last.erf["tiny_aacnn/seed0"]
    assert set(states) == {"untrained", "trained"}
    assert not torch.equal(states["untrained"].map, states["trained"].map)
    attention = AttentionMapExplorer(trained_sources)
    assert list(attention.last.maps) == ["tiny_aacnn/seed0"]


def test_attention_explorer_renders_once_per_change(sources, monkeypatch) -> None:
    """A model or layer change also updates other controls; the figure is still drawn only once."""
    explorer = AttentionMapExplorer(sources)
    calls = []
    original = aalib.widgets.attention_figure
    monkeypatch.setattr(aalib.widgets, "attention_figure", lambda *a, **k: calls.append(a) or original(*a, **k))
    explorer.model.value = "simple_laacnn"  # its comparison, layer options and head range follow
    assert len(calls) == 1 and explorer.compare.value == "simple_aacnn"
    explorer.layer.value = 0  # head range shrinks to 2 heads
    assert len(calls) == 2 and explorer.head.max == 1
