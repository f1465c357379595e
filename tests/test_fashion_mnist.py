"""Fashion-MNIST: the IDX reader and the dataset builder on generated files in the official format,
the models on one grey channel, a training run and a trained run's maps; then the real files of
Debian's dataset-fashion-mnist when they are installed (skipped with the reason when not)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from aalib.config import TrainConfig
from aalib.data import DatasetNotFoundError, DeviceLoader, build_dataset, fashion_mnist, find_fashion_mnist, read_idx
from aalib.data.fashion_mnist import DEBIAN_FOLDER, FASHION_MNIST_CLASSES, FASHION_MNIST_FILES
from aalib.models import build_model, count_parameters
from aalib.train import train
from formats import fashion_images, idx_bytes, write_fashion_mnist

ROOT_FOLDER = "fashion-mnist"


def _ids(images: torch.Tensor) -> set[int]:
    flat = images.reshape(images.shape[0], -1).long()
    return set((flat[:, 0] * 256 + flat[:, 1]).tolist())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_fashion_mnist(tmp_path / ROOT_FOLDER)
    return tmp_path


# ---------------------------------------------------------------------------------------------
# the IDX reader


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips_plain_and_gzipped_files(tmp_path: Path, gz: bool) -> None:
    array = fashion_images(5, 7)
    data = idx_bytes(array)
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if gz else data)
    np.testing.assert_array_equal(read_idx(path, 3), array)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x01\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc", "IDX magic number"),
        (b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc", r"element type 0x0d, expected 0x08"),
        (b"\x00\x00\x08\x02" + (3).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"abc", "has 2 dimensions, expected 1"),
        (b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"ab", r"has 10 bytes; its header \(3,\) needs 11"),
        (b"\x00\x00\x08\x01\x00", "truncated inside its header"),
    ],
)
def test_read_idx_rejects_malformed_files_naming_them(tmp_path: Path, data: bytes, match: str) -> None:
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path, 1)
    assert str(path) in str(info.value)


def test_read_idx_rejects_a_truncated_gzip_file(tmp_path: Path) -> None:
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(50, dtype=np.uint8)))[:-12])
    with pytest.raises(ValueError, match="truncated or corrupt gzip"):
        read_idx(path, 1)


# ---------------------------------------------------------------------------------------------
# the dataset builder on generated files


def test_builds_grey_splits_from_the_official_layout(root: Path) -> None:
    splits = build_dataset("fashion_mnist", root=root, val_size=10, debian_folder=None)
    assert splits.name == "fashion_mnist" and splits.num_classes == 10 and splits.classes == FASHION_MNIST_CLASSES
    assert splits.channels == 1 and splits.image_size == (28, 28)
    assert [len(getattr(splits, s)[1]) for s in ("train", "val", "test")] == [50, 10, 20]
    assert splits.train[0].dtype == torch.uint8 and splits.train[0].shape[1:] == (1, 28, 28)
    assert _ids(splits.test[0]) == set(range(1000, 1020))
    np.testing.assert_array_equal(splits.test[1].numpy(), (3 * np.arange(20)) % 10)
    train_ids, val_ids = _ids(splits.train[0]), _ids(splits.val[0])
    assert not train_ids & val_ids and train_ids | val_ids == set(range(60))
    assert len(splits.mean) == len(splits.std) == 1 and 0.4 < splits.mean[0] < 0.6  # uniform random pixels


def test_split_is_seeded_and_train_size_keeps_a_prefix(root: Path) -> None:
    first = fashion_mnist(root, val_size=10, split_seed=3, debian_folder=None)
    again = fashion_mnist(root, val_size=10, split_seed=3, debian_folder=None)
    other = fashion_mnist(root, val_size=10, split_seed=4, debian_folder=None)
    assert torch.equal(first.val[0], again.val[0]) and not torch.equal(first.val[0], other.val[0])
    small = fashion_mnist(root, val_size=10, split_seed=3, train_size=7, debian_folder=None)
    assert torch.equal(small.train[0], first.train[0][:7]) and torch.equal(small.val[0], first.val[0])
    with pytest.raises(ValueError, match=r"train_size must be an int in \[1, 50\] .*got 51"):
        fashion_mnist(root, val_size=10, train_size=51, debian_folder=None)


def test_search_order_root_then_torchvision_layout_then_debian(tmp_path: Path) -> None:
    debian = write_fashion_mnist(tmp_path / "debian", n_train=30, n_test=10)
    assert find_fashion_mnist(tmp_path / "data", debian)["t10k-images-idx3-ubyte"].parent == debian
    torchvision_layout = write_fashion_mnist(tmp_path / "data" / "FashionMNIST" / "raw", n_train=40, gz=False)
    found = find_fashion_mnist(tmp_path / "data", debian)
    assert found["train-images-idx3-ubyte"] == torchvision_layout / "train-images-idx3-ubyte"
    write_fashion_mnist(tmp_path / "data" / ROOT_FOLDER, n_train=50)
    assert len(fashion_mnist(tmp_path / "data", val_size=5, debian_folder=debian).train[1]) == 45


def test_missing_files_name_the_debian_package_the_folders_and_the_layout(tmp_path: Path) -> None:
    incomplete = write_fashion_mnist(tmp_path / ROOT_FOLDER)
    (incomplete / "t10k-labels-idx1-ubyte.gz").unlink()  # one file short: the folder does not count
    with pytest.raises(DatasetNotFoundError) as info:
        fashion_mnist(tmp_path, debian_folder=tmp_path / "no-debian")
    message = str(info.value)
    assert message.startswith("Fashion-MNIST not found in ")
    for text in ("dataset-fashion-mnist", "apt-get install", str(tmp_path / ROOT_FOLDER), str(tmp_path / "no-debian"),
                 "t10k-labels-idx1-ubyte[.gz]", "download: true"):
        assert text in message


def test_download_goes_through_torchvision_into_its_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    calls = []

    class FakeFashionMNIST:  # stands in for the network: writes what torchvision's download writes
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            write_fashion_mnist(Path(root) / "FashionMNIST" / "raw", gz=False)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    with pytest.raises(DatasetNotFoundError):  # download off: nothing fetched
        fashion_mnist(tmp_path, debian_folder=None)
    assert not calls
    splits = fashion_mnist(tmp_path, download=True, val_size=10, debian_folder=None)
    assert calls == [(str(tmp_path), True, True)] and len(splits.train[1]) == 50

    class Offline:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Offline)
    with pytest.raises(DatasetNotFoundError, match="Fashion-MNIST download failed .*Error downloading"):
        fashion_mnist(tmp_path / "elsewhere", download=True, debian_folder=None)


@pytest.mark.parametrize(
    "name, data, match",
    [
        ("train-labels-idx1-ubyte", idx_bytes(np.full(60, 10, dtype=np.uint8)), "has label 10, allowed 0-9"),
        ("train-labels-idx1-ubyte", idx_bytes(np.zeros(59, dtype=np.uint8)), "hold 60 images and 59 labels"),
        ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((20, 32, 32), dtype=np.uint8)), "holds 32x32 images, expected 28x28"),
        ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((20, 28), dtype=np.uint8)), "has 2 dimensions, expected 3"),
    ],
)
def test_structural_errors_name_the_file(root: Path, name: str, data: bytes, match: str) -> None:
    path = root / ROOT_FOLDER / f"{name}.gz"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(ValueError, match=match) as info:
        fashion_mnist(root, val_size=10, debian_folder=None)
    assert str(path) in str(info.value)


def test_a_file_of_the_official_length_must_have_the_official_md5(root: Path) -> None:
    md5, length = FASHION_MNIST_FILES["t10k-labels-idx1-ubyte"]
    assert length == 8 + 10_000
    path = root / ROOT_FOLDER / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(10_000, dtype=np.uint8))))
    with pytest.raises(ValueError, match=f"has the official length but md5 .* \\(decompressed\\), expected {md5}"):
        fashion_mnist(root, val_size=10, debian_folder=None)
    with pytest.raises(ValueError, match="hold 20 images and 10000 labels"):  # without the check: the structure
        fashion_mnist(root, val_size=10, verify=False, debian_folder=None)


def test_grey_batches_normalise_with_one_channel(root: Path) -> None:
    splits = fashion_mnist(root, val_size=10, debian_folder=None)
    loader = DeviceLoader(*splits.train, batch_size=16, normalize=(splits.mean, splits.std))
    images, _ = next(iter(loader))
    assert images.shape == (16, 1, 28, 28) and abs(float(images.mean())) < 0.5


# ---------------------------------------------------------------------------------------------
# the models on one grey channel, a run, and the maps of a trained run


@pytest.mark.parametrize("attention", [None, "softmax", "linear", "linear_swapped"])
def test_shallow_models_take_one_channel_changing_only_conv1(attention: str | None) -> None:
    colour = build_model("repro_simple_cnn", attention=attention, num_classes=10)
    grey = build_model("repro_simple_cnn", attention=attention, num_classes=10, in_channels=1)
    assert count_parameters(colour) - count_parameters(grey) == 2 * 3 * 3 * 16  # conv1's weights for 2 channels fewer
    assert grey(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_wide_models_take_one_channel_and_bad_channel_counts_are_refused() -> None:
    grey = build_model("repro_wrn", attention="linear", num_classes=10, in_channels=1)
    assert grey.stem.in_channels == 1 and grey.eval()(torch.rand(1, 1, 28, 28)).shape == (1, 10)
    assert build_model("wrn", depth=10, width=1, in_channels=1).stem.in_channels == 1
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        build_model("repro_simple_cnn", in_channels=0)


def test_a_run_on_grey_images_records_its_shape_and_its_maps_load(root: Path, tmp_path: Path) -> None:
    from aalib.analysis.sources import load_sources
    from aalib.analysis.views import attention_figure, erf_figure, erf_study
    from aalib.widgets import AttentionMapExplorer, ReceptiveFieldExplorer
    from aalib.runs import find_runs

    config = TrainConfig(name="fm", model="repro_simple_cnn", model_args={"attention": "softmax"}, dataset="fashion_mnist",
                         dataset_args={"val_size": 10, "debian_folder": None}, data_root=str(root), epochs=1,
                         batch_size=25, eval_batch_size=25, augment=False, log_every=0, progress=False)
    summary = train(config, tmp_path / "runs" / "fm")
    assert summary["status"] == "finished" and summary["image_shape"] == [1, 28, 28]
    (run,) = find_runs(tmp_path / "runs")
    assert run.model().features[0].conv.in_channels == 1
    sources, note = load_sources(tmp_path / "runs", image_count=2)
    assert note.startswith("Loaded 1 finished run") and sources["fm"].images.shape == (2, 1, 28, 28)
    figure, maps = attention_figure(sources, image_index=0, layer_index=1, query=(14, 14))  # where does a pixel look?
    assert figure.axes[0].images[0].get_array().shape == (28, 28, 3)  # the grey image shown as RGB
    assert maps["fm"].image_maps.shape[-2:] == (28, 28)
    erfs = erf_study(sources, layer_index=4, image_count=2)
    assert set(erfs["fm"]) == {"untrained", "trained"} and erfs["fm"]["trained"].map.shape == (28, 28)
    assert erf_figure(sources, erfs, layer_index=4).axes
    explorer = ReceptiveFieldExplorer(sources, ig_steps=4)  # the interactive notebooks' widgets
    explorer.attribution_images.value = 1
    explorer.compute_button.click()
    assert explorer.last.attributions["fm"]["integrated gradients"].shape == (1, 1, 28, 28)
    assert list(AttentionMapExplorer(sources, query=(14, 14)).last.maps) == ["fm"]


# ---------------------------------------------------------------------------------------------
# the real files, from Debian's package dataset-fashion-mnist

real = pytest.mark.skipif(find_fashion_mnist("data") is None,
                          reason=f"Fashion-MNIST not installed (apt-get install dataset-fashion-mnist puts it in {DEBIAN_FOLDER})")


@real
def test_real_files_have_the_official_checksums_counts_and_balance() -> None:
    files = find_fashion_mnist("data")
    for name, (md5, length) in FASHION_MNIST_FILES.items():
        data = read_idx(files[name], 3 if "images" in name else 1)
        raw = gzip.decompress(files[name].read_bytes()) if files[name].suffix == ".gz" else files[name].read_bytes()
        assert len(raw) == length and hashlib.md5(raw, usedforsecurity=False).hexdigest() == md5, name
        assert data.shape[0] == (60_000 if name.startswith("train") else 10_000)
    train_labels = read_idx(files["train-labels-idx1-ubyte"], 1)
    test_labels = read_idx(files["t10k-labels-idx1-ubyte"], 1)
    assert np.bincount(train_labels).tolist() == [6000] * 10 and np.bincount(test_labels).tolist() == [1000] * 10
    splits = fashion_mnist("data")
    assert [len(getattr(splits, s)[1]) for s in ("train", "val", "test")] == [55_000, 5_000, 10_000]
    assert splits.mean[0] == pytest.approx(0.286, abs=0.002) and splits.std[0] == pytest.approx(0.353, abs=0.002)


SANITY_TOP1 = 50.0  # %: five times chance (10 classes); a network that learns nothing stays near 10 %


@real
def test_real_images_a_short_training_run_beats_the_sanity_accuracy(tmp_path: Path) -> None:
    config = TrainConfig(name="fm_sanity", model="repro_simple_cnn", dataset="fashion_mnist",
                         dataset_args={"train_size": 4000, "val_size": 1000}, epochs=2, batch_size=64, lr=0.05,
                         schedule="constant", augment=False, log_every=0, progress=False)
    summary = train(config, tmp_path / "run")
    assert summary["test"]["images"] == 10_000
    assert summary["test"]["top1"] >= SANITY_TOP1, summary["test"]
