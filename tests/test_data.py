"""Tests of aalib.data: dataset builders on small fixtures in the official layouts, the synthetic
long-range task, the device loader, and the download/extraction safety checks. No network."""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import aalib.data.cifar as cifar_module
import aalib.data.tinyimagenet as tiny_module
from aalib.data import (
    ChecksumError,
    DatasetNotFoundError,
    DeviceLoader,
    ImageSplits,
    LongRangeTask,
    UnsafePickleError,
    additive_ceiling,
    build_dataset,
    cifar100,
    download_file,
    generate_long_range,
    list_datasets,
    load_restricted,
    long_range,
    long_range_samples,
    mark_gaps,
    safe_extract,
    tiny_imagenet,
)
from aalib.data.download import file_md5
from aalib.data.synthetic import BACKGROUND, PALETTE, max_gap
from formats import CLASS_RGB, WNIDS, cifar_data, save_jpeg, write_cifar100, write_tiny_imagenet

# ---------------------------------------------------------------------------------------------
# registry


def test_list_datasets() -> None:
    assert list_datasets() == ["cifar100", "fashion_mnist", "long_range", "pathfinder", "tiny_imagenet"]


def test_build_dataset_unknown_name_lists_known() -> None:
    with pytest.raises(ValueError, match="cifar100.*long_range.*tiny_imagenet"):
        build_dataset("imagenet")


def test_build_dataset_unknown_argument_lists_allowed() -> None:
    with pytest.raises(ValueError, match="imagesize.*allowed.*image_size"):
        build_dataset("long_range", imagesize=32)


# ---------------------------------------------------------------------------------------------
# CIFAR-100 fixture in the official python-pickle layout


def _image_ids(images: torch.Tensor) -> set[int]:
    flat = images.reshape(images.shape[0], -1).long()
    return set((flat[:, 0] * 256 + flat[:, 1]).tolist())


@pytest.fixture
def data_cifar_root(tmp_path: Path) -> Path:
    write_cifar100(tmp_path)
    return tmp_path


def test_cifar_loads_official_layout(data_cifar_root: Path) -> None:
    splits = cifar100(root=data_cifar_root, val_size=10)
    assert isinstance(splits, ImageSplits)
    assert splits.name == "cifar100" and splits.num_classes == 100 and splits.image_size == (32, 32)
    assert splits.classes[:2] == ["class00", "class01"] and len(splits.classes) == 100
    for (images, labels), size in ((splits.train, 50), (splits.val, 10), (splits.test, 20)):
        assert images.shape == (size, 3, 32, 32) and images.dtype == torch.uint8 and images.is_contiguous()
        assert labels.shape == (size,) and labels.dtype == torch.int64
    # test = the official test file, in file order, rows read as (3, 32, 32) channel planes
    test_data = cifar_data(20, 1000)
    assert torch.equal(splits.test[0][3], torch.from_numpy(test_data[3].reshape(3, 32, 32)))
    assert splits.test[1].tolist() == [(7 * i) % 100 for i in range(20)]
    # mean/std from the train split only
    train = splits.train[0].double() / 255
    assert np.allclose(splits.mean, train.mean(dim=(0, 2, 3)).tolist(), atol=1e-9)
    assert np.allclose(splits.std, train.std(dim=(0, 2, 3), unbiased=False).tolist(), atol=1e-9)


def test_cifar_split_is_seeded_disjoint_and_complete(data_cifar_root: Path) -> None:
    first = cifar100(root=data_cifar_root, val_size=10, split_seed=3)
    again = cifar100(root=data_cifar_root, val_size=10, split_seed=3)
    other = cifar100(root=data_cifar_root, val_size=10, split_seed=4)
    assert torch.equal(first.val[0], again.val[0]) and torch.equal(first.train[1], again.train[1])
    assert not torch.equal(first.val[0], other.val[0])
    train_ids, val_ids = _image_ids(first.train[0]), _image_ids(first.val[0])
    assert not train_ids & val_ids
    assert train_ids | val_ids == set(range(60))
    # labels travel with their images: label of training row i is i % 100
    flat = first.val[0].reshape(10, -1).long()
    assert (first.val[1] == (flat[:, 0] * 256 + flat[:, 1]) % 100).all()


def test_cifar_bytes_keys(tmp_path: Path) -> None:
    write_cifar100(tmp_path, bytes_keys=True)
    splits = cifar100(root=tmp_path, val_size=5)
    assert splits.train[0].shape[0] == 55 and splits.classes[5] == "class05"


def _py2_pickle(record: dict[str, object]) -> bytes:
    """A protocol-2 pickle as Python 2's cPickle wrote the official files: str (not unicode)
    keys and array bytes, and numpy's pre-2.0 module path ``numpy.core.multiarray``."""

    def text(raw: bytes) -> bytes:  # SHORT_BINSTRING / BINSTRING
        return b"U" + bytes([len(raw)]) + raw if len(raw) < 256 else b"T" + struct.pack("<I", len(raw)) + raw

    def integer(value: int) -> bytes:  # BININT
        return b"J" + struct.pack("<i", value)

    def value(obj: object) -> bytes:
        if isinstance(obj, np.ndarray):  # _reconstruct(ndarray, (0,), 'b') then __setstate__
            dtype = b"cnumpy\ndtype\n" + text(b"u1") + integer(0) + integer(1) + b"\x87R"
            dtype += b"(" + integer(3) + text(b"|") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb"
            shape = b"(" + b"".join(integer(d) for d in obj.shape) + b"t"
            return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85"
                    + text(b"b") + b"\x87R(" + integer(1) + shape + dtype + b"\x89" + text(obj.tobytes()) + b"tb")
        if isinstance(obj, list):
            return b"](" + b"".join(value(item) for item in obj) + b"e"
        if isinstance(obj, int):
            return integer(obj)
        return text(str(obj).encode("latin1"))

    items = b"".join(text(key.encode()) + value(item) for key, item in record.items())
    return b"\x80\x02}(" + items + b"u."


def test_cifar_reads_python2_pickles(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path, n_train=12, n_test=4)
    data = cifar_data(12, 0)
    (folder / "train").write_bytes(_py2_pickle({"data": data, "fine_labels": [99 - i for i in range(12)]}))
    (folder / "meta").write_bytes(_py2_pickle({"fine_label_names": [f"name{i}" for i in range(100)]}))
    splits = cifar100(root=tmp_path, val_size=2, split_seed=0)
    images = torch.cat([splits.train[0], splits.val[0]])
    assert _image_ids(images) == set(range(12)) and splits.classes[99] == "name99"
    row = sorted(_image_ids(splits.train[0]))[0]
    assert torch.equal(splits.train[0][0], torch.from_numpy(data[row].reshape(3, 32, 32)))
    assert splits.train[1][0].item() == 99 - row


def test_cifar_val_size_out_of_range(data_cifar_root: Path) -> None:
    with pytest.raises(ValueError, match=r"val_size must be an int in \[0, 59\] .*got 60"):
        cifar100(root=data_cifar_root, val_size=60)


def test_cifar_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python") as info:
        cifar100(root=tmp_path / "nowhere")
    message = str(info.value)
    assert "cifar-100-python.tar.gz" in message and "download: true" in message
    assert isinstance(info.value, FileNotFoundError)


def test_cifar_incomplete_names_missing_file(data_cifar_root: Path) -> None:
    (data_cifar_root / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DatasetNotFoundError, match="incomplete.*meta"):
        cifar100(root=data_cifar_root)


@pytest.mark.parametrize(
    "record, match",
    [
        ({"data": np.zeros((4, 3000), np.uint8), "fine_labels": [0] * 4}, r"uint8 \(N, 3072\)"),
        ({"data": np.zeros((4, 3072), np.uint8), "fine_labels": [0] * 3}, "3 fine_labels for 4 images"),
        ({"data": np.zeros((4, 3072), np.uint8), "fine_labels": [0, 1, 2, 100]}, r"allowed \[0, 99\]"),
        ({"data": np.zeros((4, 3072), np.uint8)}, "lacks key"),
    ],
)
def test_cifar_structural_validation(data_cifar_root: Path, record: dict, match: str) -> None:
    (data_cifar_root / "cifar-100-python" / "train").write_bytes(pickle.dumps(record, protocol=2))
    with pytest.raises(ValueError, match=match) as info:
        cifar100(root=data_cifar_root)
    assert "train" in str(info.value)


def test_cifar_truncated_file_names_it(data_cifar_root: Path) -> None:
    path = data_cifar_root / "cifar-100-python" / "test"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="test' is truncated or corrupt"):
        cifar100(root=data_cifar_root)


def test_cifar_verify_applies_to_official_size_files(data_cifar_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = data_cifar_root / "cifar-100-python" / "train"
    # Pretend the fixture's size is the official one: its md5 now has to match.
    files = dict(cifar_module.CIFAR100_FILES, train=("0" * 32, train.stat().st_size))
    monkeypatch.setattr(cifar_module, "CIFAR100_FILES", files)
    with pytest.raises(ValueError, match="official size but md5"):
        cifar100(root=data_cifar_root)
    cifar100(root=data_cifar_root, val_size=10, verify=False)  # opt-out
    files["train"] = (file_md5(train), train.stat().st_size)
    files["meta"] = (file_md5(train.parent / "meta"), None)  # meta is checked when train is official
    cifar100(root=data_cifar_root, val_size=10)


def test_cifar_download_from_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source"
    write_cifar100(source, n_train=30, n_test=10)
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-100-python", arcname="cifar-100-python")
    monkeypatch.setattr(cifar_module, "CIFAR100_URL", archive.as_uri())
    monkeypatch.setattr(cifar_module, "CIFAR100_MD5", file_md5(archive))
    splits = cifar100(root=tmp_path / "data", download=True, val_size=5)
    assert splits.train[0].shape[0] == 25 and splits.test[0].shape[0] == 10
    assert (tmp_path / "data" / "cifar-100-python" / "train").is_file()


# ---------------------------------------------------------------------------------------------
# restricted unpickler


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.system, (f"touch '{self.marker}'",))


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"data": _Evil(marker)}, protocol=2)
    with pytest.raises(UnsafePickleError, match="refusing to load global '(posix|os|nt).system'"):
        load_restricted(io.BytesIO(payload))
    assert not marker.exists()


def test_cifar_refuses_malicious_pickle(data_cifar_root: Path) -> None:
    marker = data_cifar_root / "pwned"
    (data_cifar_root / "cifar-100-python" / "train").write_bytes(pickle.dumps({"data": _Evil(marker)}))
    with pytest.raises(UnsafePickleError, match="train"):
        cifar100(root=data_cifar_root)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_reads_numpy_arrays(protocol: int) -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    loaded = load_restricted(io.BytesIO(pickle.dumps({b"data": array, "labels": [1, 2]}, protocol=protocol)))
    assert np.array_equal(loaded[b"data"], array) and loaded["labels"] == [1, 2]


# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet fixture in the official layout

@pytest.fixture
def data_tiny_root(tmp_path: Path) -> Path:
    write_tiny_imagenet(tmp_path)
    return tmp_path


def _colour_labels(images: torch.Tensor) -> torch.Tensor:
    """Class of each flat-colour fixture image from its dominant channel."""
    return images.float().mean(dim=(2, 3)).argmax(dim=1)


def test_tiny_imagenet_loads_official_layout(data_tiny_root: Path) -> None:
    splits = tiny_imagenet(root=data_tiny_root, val_size=3, progress=False)
    assert splits.name == "tiny_imagenet" and splits.num_classes == 3 and splits.image_size == (64, 64)
    assert splits.classes == [f"thing {w[1:3]}, other name" for w in WNIDS]
    assert splits.train[0].shape == (10, 3, 64, 64) and splits.val[0].shape == (3, 3, 64, 64)
    assert splits.test[0].shape == (6, 3, 64, 64)
    assert splits.train[0].dtype == torch.uint8 and splits.test[1].dtype == torch.int64
    # labels follow wnids.txt order (colours are indexed by that order)
    assert splits.test[1].tolist() == [2, 0, 1, 1, 0, 2]
    assert torch.equal(_colour_labels(splits.test[0]), splits.test[1])
    # the greyscale image is kept, as three equal channels
    images = torch.cat([splits.train[0], splits.val[0]])
    grey = (images[:, 0] == images[:, 1]).all(dim=(1, 2)) & (images[:, 1] == images[:, 2]).all(dim=(1, 2))
    assert grey.sum() == 1
    colour = torch.cat([splits.train[1], splits.val[1]])[~grey]
    assert torch.equal(_colour_labels(images[~grey]), colour)


def test_tiny_imagenet_cache_used_and_invalidated(data_tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tiny_imagenet(root=data_tiny_root, val_size=3, progress=False)
    cache = data_tiny_root / "tiny-imagenet-200" / "aalib_cache.pt"
    assert cache.is_file()

    calls: list[int] = []
    real_decode = tiny_module._decode_all

    def counting_decode(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(tiny_module, "_decode_all", counting_decode)
    second = tiny_imagenet(root=data_tiny_root, val_size=3, progress=False)
    assert not calls, "the second load must come from the cache"
    assert torch.equal(first.train[0], second.train[0]) and torch.equal(first.test[1], second.test[1])

    save_jpeg(data_tiny_root / "tiny-imagenet-200" / "train" / WNIDS[0] / "images" / "extra.JPEG", CLASS_RGB[0])
    third = tiny_imagenet(root=data_tiny_root, val_size=3, progress=False)
    assert calls, "a changed file list must rebuild the cache"
    assert third.train[0].shape[0] + third.val[0].shape[0] == 14


def test_tiny_imagenet_corrupt_cache_is_rebuilt(data_tiny_root: Path) -> None:
    tiny_imagenet(root=data_tiny_root, val_size=3, progress=False)
    cache = data_tiny_root / "tiny-imagenet-200" / "aalib_cache.pt"
    cache.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="rebuilding"):
        splits = tiny_imagenet(root=data_tiny_root, val_size=3, progress=False)
    assert splits.test[0].shape[0] == 6
    assert torch.load(cache, weights_only=True)["test_images"].shape[0] == 6


def test_tiny_imagenet_missing_val_annotations(data_tiny_root: Path) -> None:
    (data_tiny_root / "tiny-imagenet-200" / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="val_annotations.txt"):
        tiny_imagenet(root=data_tiny_root, progress=False)


def test_tiny_imagenet_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="tiny-imagenet-200") as info:
        tiny_imagenet(root=tmp_path, progress=False)
    assert "tiny-imagenet-200.zip" in str(info.value) and "download: true" in str(info.value)


def test_tiny_imagenet_download_from_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_tiny_imagenet(tmp_path / "source", per_class=2)
    archive = tmp_path / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    monkeypatch.setattr(tiny_module, "TINY_IMAGENET_URL", archive.as_uri())
    monkeypatch.setattr(tiny_module, "TINY_IMAGENET_MD5", file_md5(archive))
    splits = tiny_imagenet(root=tmp_path / "data", download=True, val_size=2, progress=False)
    assert splits.train[0].shape[0] == 5 and splits.test[0].shape[0] == 6


# ---------------------------------------------------------------------------------------------
# long_range synthetic task

_SMALL = dict(train_size=200, val_size=50 * 2, test_size=60)


def test_long_range_deterministic_per_seed() -> None:
    first, again = long_range(**_SMALL, seed=1), long_range(**_SMALL, seed=1)
    other = long_range(**_SMALL, seed=2)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(first, split)[0], getattr(again, split)[0])
        assert torch.equal(getattr(first, split)[1], getattr(again, split)[1])
        assert not torch.equal(getattr(first, split)[0], getattr(other, split)[0])
    assert not torch.equal(first.train[0][:50], first.val[0][:50])  # independent streams per split
    assert first.classes == ["different", "same"] and first.num_classes == 2
    assert first.train[0].shape == (200, 3, 32, 32) and first.train[0].dtype == torch.uint8


def test_long_range_exactly_balanced() -> None:
    splits = long_range(**_SMALL)
    for split, size in (("train", 200), ("val", 100), ("test", 60)):
        labels = getattr(splits, split)[1]
        assert labels.shape == (size,) and labels.sum().item() == size // 2


@pytest.mark.parametrize("image_size, receptive_field, mark_size", [(32, 21, 3), (26, 21, 3), (40, 11, 4)])
def test_long_range_distance_rule_on_every_sample(image_size: int, receptive_field: int, mark_size: int) -> None:
    kwargs = dict(_SMALL, image_size=image_size, receptive_field=receptive_field, mark_size=mark_size)
    samples = long_range_samples("train", **kwargs)
    assert torch.equal(samples.images, long_range(**kwargs).train[0])
    pos = samples.mark_positions  # N, 2, (y, x)
    nearest = (pos[:, 0] - pos[:, 1]).abs() - (mark_size - 1)  # N, 2: nearest-pixel coordinate gap
    assert (nearest.amax(dim=1) >= receptive_field).all()
    # Independent check: no receptive_field x receptive_field window holds pixels of both marks.
    grid = torch.arange(image_size)
    masks = []
    for k in range(2):
        rows = (grid >= pos[:, k, 0, None]) & (grid < pos[:, k, 0, None] + mark_size)  # N, S
        cols = (grid >= pos[:, k, 1, None]) & (grid < pos[:, k, 1, None] + mark_size)
        masks.append((rows[:, :, None] & cols[:, None, :]).float()[:, None])  # N, 1, S, S
    windows = [F.max_pool2d(mask, receptive_field, stride=1) for mask in masks]
    assert not ((windows[0] > 0) & (windows[1] > 0)).any()


@pytest.mark.parametrize("image_size, receptive_field, max_distance, mark_size", [(32, 4, 7, 3), (32, 22, 25, 3),
                                                                                   (64, 44, 50, 6), (32, 27, 27, 3)])
def test_long_range_distance_band_on_every_sample(image_size: int, receptive_field: int, max_distance: int,
                                                  mark_size: int) -> None:
    kwargs = dict(_SMALL, image_size=image_size, receptive_field=receptive_field, max_distance=max_distance,
                  mark_size=mark_size, train_size=2000)
    samples = long_range_samples("train", **kwargs)
    pos = samples.mark_positions  # N, 2, (y, x)
    per_axis = (pos[:, 0] - pos[:, 1]).abs() - (mark_size - 1)  # N, 2: nearest-pixel coordinate gap
    assert torch.equal(mark_gaps(pos, mark_size), per_axis)
    gap = per_axis.amax(dim=1)
    assert ((gap >= receptive_field) & (gap <= max_distance)).all()
    # every gap of the band occurs, none of them rare (the placement is uniform over valid pairs)
    counts = torch.bincount(gap - receptive_field, minlength=max_distance - receptive_field + 1)
    assert len(counts) == max_distance - receptive_field + 1 and (counts > 0.05 * len(gap) / len(counts)).all()


def test_long_range_without_max_distance_is_the_unbounded_task() -> None:
    bounded = long_range_samples("val", **_SMALL, max_distance=max_gap(32, 3))  # the largest gap: no bound
    assert torch.equal(bounded.images, long_range_samples("val", **_SMALL).images)
    with pytest.raises(ValueError, match=r"max_distance must be an int in \[21, 27\].*got 20"):
        long_range(**_SMALL, max_distance=20)
    with pytest.raises(ValueError, match=r"max_distance must be an int in \[21, 27\].*got 28"):
        LongRangeTask(max_distance=28)


def test_long_range_label_is_same_colour_relation() -> None:
    samples = long_range_samples("val", **_SMALL, noise=0.0, colours=5)
    colours = samples.mark_colours
    assert torch.equal(samples.labels, (colours[:, 0] == colours[:, 1]).long())
    palette = (torch.tensor(PALETTE) * 255).round().to(torch.uint8)  # K, 3
    for k in range(2):
        centre = samples.mark_positions[:, k] + 1  # mark_size 3: centre pixel
        pixels = samples.images[torch.arange(len(centre)), :, centre[:, 0], centre[:, 1]]  # N, 3
        assert torch.equal(pixels, palette[colours[:, k]])
    # every colour is used by the marks of both classes (single marks carry no label information)
    for label in (0, 1):
        assert set(colours[samples.labels == label].flatten().tolist()) == set(range(5))


def test_long_range_distractors_cannot_pass_for_marks() -> None:
    """Noise-free: the only uniform non-background mark-sized squares are the two marks."""
    samples = long_range_samples("test", **_SMALL, noise=0.0, distractors=4)
    images = samples.images.long()
    background = (torch.tensor(BACKGROUND) * 255).round().long()
    code = images[:, 0] * 65536 + images[:, 1] * 256 + images[:, 2]  # N, S, S one value per colour
    patches = F.unfold(code[:, None].double(), kernel_size=3)  # N, 9, L
    uniform = (patches == patches[:, :1]).all(dim=1)
    not_background = patches[:, 0] != float(background[0] * 65536 + background[1] * 256 + background[2])
    assert ((uniform & not_background).sum(dim=1) == 2).all()
    # distractors are really drawn: a plus has non-background pixels beyond the marks'
    assert ((code != code[:, :1, :1]).sum(dim=(1, 2)) == 2 * 9 + 4 * 5).all()


def test_long_range_too_small_image_names_minimum() -> None:
    with pytest.raises(ValueError, match=r"image_size=25 is too small.*image_size >= 26"):
        long_range(image_size=25, receptive_field=21, mark_size=3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(train_size=201), "train_size=201 must be even"),
        (dict(colours=1), r"colours must be an int in \[2, 8\], got 1"),
        (dict(noise=-0.1), r"noise must be a finite number >= 0 \(std of pixel noise, images in \[0, 1\]\), got -0.1"),
        (dict(distractors=500), "cannot place distractors=500"),
    ],
)
def test_long_range_rejects_bad_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        long_range(**{**_SMALL, **kwargs})


def test_long_range_task_is_one_object_for_the_generator_the_dataset_and_its_runs() -> None:
    task = LongRangeTask(image_size=24, receptive_field=11, mark_size=4)
    assert task.distractor_size == 4 and task == LongRangeTask(image_size=24, receptive_field=11, mark_size=4, distractor_size=4)
    args = {"image_size": 24, "receptive_field": 11, "mark_size": 4, "train_size": 20, "val_size": 0, "test_size": 20, "seed": 3}
    assert LongRangeTask.from_arguments(args) == task and LongRangeTask.from_arguments({}) == LongRangeTask()
    samples = long_range_samples("test", **args)
    assert samples.task == task
    again = generate_long_range(20, np.random.default_rng([3, 2]), task)  # the test split's stream of seed 3
    assert torch.equal(again.images, samples.images) and torch.equal(samples.images, long_range(**args).test[0])
    with pytest.raises(ValueError, match="mark_size must be a positive int, got 0"):
        LongRangeTask(mark_size=0)
    with pytest.raises(TypeError, match="colour"):
        long_range_samples("test", colour=3)  # an argument long_range does not take


def test_long_range_through_registry() -> None:
    splits = build_dataset("long_range", **_SMALL, image_size=36)
    assert splits.image_size == (36, 36) and len(splits.mean) == 3 and all(s > 0 for s in splits.std)


# ---------------------------------------------------------------------------------------------
# DeviceLoader


@pytest.fixture
def data_images() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 3, 6, 7), dtype=torch.uint8, generator=generator)
    return images, torch.arange(30)


def _collect(loader: DeviceLoader) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(loader)
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def test_loader_batches_in_order_without_augmentation(data_images) -> None:  # noqa: ANN001
    images, labels = data_images
    loader = DeviceLoader(images, labels, batch_size=8)
    assert len(loader) == 4 and loader.num_samples == 30
    sizes = [b[0].shape[0] for b in loader]
    assert sizes == [8, 8, 8, 6]
    out, out_labels = _collect(loader)
    assert out.dtype == torch.float32 and out_labels.dtype == torch.int64
    assert torch.equal(out, images.float() / 255) and torch.equal(out_labels, labels)


def test_loader_drop_last(data_images) -> None:  # noqa: ANN001
    loader = DeviceLoader(*data_images, batch_size=8, drop_last=True)
    assert len(loader) == 3 and [b[0].shape[0] for b in loader] == [8, 8, 8]


def test_loader_shuffle_depends_on_seed_and_epoch_only(data_images) -> None:  # noqa: ANN001
    a = DeviceLoader(*data_images, batch_size=7, shuffle=True, seed=5)
    b = DeviceLoader(*data_images, batch_size=7, shuffle=True, seed=5)
    labels_a, labels_b = _collect(a)[1], _collect(b)[1]
    assert torch.equal(labels_a, labels_b)
    assert sorted(labels_a.tolist()) == list(range(30))  # a permutation
    assert not torch.equal(labels_a, torch.arange(30))
    assert torch.equal(_collect(a)[1], labels_a)  # same epoch again: same order (resume)
    a.set_epoch(1)
    assert not torch.equal(_collect(a)[1], labels_a)
    b.set_epoch(1)
    assert torch.equal(_collect(a)[1], _collect(b)[1])
    c = DeviceLoader(*data_images, batch_size=7, shuffle=True, seed=6)
    assert not torch.equal(_collect(c)[1], labels_a)


@pytest.mark.parametrize("total, world_size", [(30, 3), (30, 4), (31, 2)])
def test_loader_rank_shards(total: int, world_size: int) -> None:
    images = torch.zeros(total, 3, 4, 4, dtype=torch.uint8)
    shards = []
    for rank in range(world_size):
        loader = DeviceLoader(images, torch.arange(total), batch_size=4, shuffle=True, seed=1,
                              rank=rank, world_size=world_size)
        shards.append(_collect(loader)[1])
        assert len(loader) == len(DeviceLoader(images, torch.arange(total), batch_size=4, world_size=world_size))
    sizes = {len(shard) for shard in shards}
    assert sizes == {-(-total // world_size)}  # equal sizes: every rank runs the same steps
    union = torch.cat(shards)
    assert set(union.tolist()) == set(range(total))
    if total % world_size == 0:
        assert len(union) == total  # disjoint when it divides evenly
    else:
        assert len(union) - total == world_size * -(-total // world_size) - total  # padding only


def test_loader_rank_shards_drop_last_are_disjoint() -> None:
    images = torch.zeros(31, 3, 4, 4, dtype=torch.uint8)
    shards = [
        _collect(DeviceLoader(images, torch.arange(31), batch_size=5, shuffle=True, rank=r, world_size=3,
                              drop_last=True))[1]
        for r in range(3)
    ]
    assert [len(s) for s in shards] == [10, 10, 10]
    assert len(set(torch.cat(shards).tolist())) == 30


def test_loader_flip_only_mirrors(data_images) -> None:  # noqa: ANN001
    images, labels = data_images
    out, out_labels = _collect(DeviceLoader(images, labels, batch_size=16, flip=True, seed=3))
    original = images.float() / 255
    flipped = (out == original.flip(-1)).all(dim=(1, 2, 3))
    same = (out == original).all(dim=(1, 2, 3))
    assert (flipped | same).all()
    assert flipped.any() and same.any()


@pytest.mark.parametrize("pad", [2, 5])  # 5 = the largest reflect padding of a 6-pixel side
def test_loader_crop_moves_pixels_only(data_images, pad: int) -> None:  # noqa: ANN001
    images, labels = data_images
    loader = DeviceLoader(images, labels, batch_size=16, crop_padding=pad, flip=True, seed=4)
    out, out_labels = _collect(loader)
    assert out.shape == images.shape
    padded = F.pad(images.float() / 255, (pad,) * 4, mode="reflect")
    height, width = images.shape[-2:]
    offsets = set()
    for i in range(len(out)):
        matches = [
            (dy, dx, f)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            for f in (False, True)
            if torch.equal(out[i], (lambda c: c.flip(-1) if f else c)(padded[i, :, dy : dy + height, dx : dx + width]))
        ]
        assert matches, f"sample {i} is not a (flipped) crop of its padded original"
        offsets.add(matches[0][:2])
    assert len(offsets) > 1  # offsets really vary across samples
    again = _collect(DeviceLoader(images, labels, batch_size=16, crop_padding=pad, flip=True, seed=4))[0]
    assert torch.equal(out, again)
    loader.set_epoch(1)
    assert not torch.equal(_collect(loader)[0], out)


def test_loader_normalize_and_channels_last(data_images) -> None:  # noqa: ANN001
    images, labels = data_images
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    loader = DeviceLoader(images, labels, batch_size=30, normalize=(mean, std), channels_last=True)
    (batch, _), = list(loader)
    expected = (images.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.allclose(batch, expected, atol=1e-6)
    assert batch.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size must be a positive int, got 0"),
        (dict(batch_size=4, crop_padding=6), r"crop_padding must be an int in \[0, 5\] for 6x7 images .*got 6"),
        (dict(batch_size=4, rank=2, world_size=2), r"rank must be an int in \[0, 1\] for world_size=2, got 2"),
        (dict(batch_size=4, normalize=((0.5,), (0.5,))), "3 values each"),
    ],
)
def test_loader_rejects_bad_arguments(data_images, kwargs: dict, match: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        DeviceLoader(*data_images, **kwargs)


# ---------------------------------------------------------------------------------------------
# download and extraction


def test_download_file_verifies_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload" * 1000)
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(ChecksumError, match="expected 0+"):
        download_file(source.as_uri(), dest, "0" * 32, progress=False)
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []  # temp file removed
    download_file(source.as_uri(), dest, file_md5(source), progress=False)
    assert dest.read_bytes() == source.read_bytes()

    def no_network(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("an existing file with the right md5 must not be downloaded again")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    assert download_file(source.as_uri(), dest, file_md5(source), progress=False) == dest


def _tar_with(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            data = b"x" * member.size if member.isfile() else None
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def _tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = 3 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "member, match",
    [
        (_tar_member("/tmp/evil.txt"), "absolute path"),
        (_tar_member("safe/../../evil.txt"), r"'\.\.' component"),
        (_tar_member("safe/link", tarfile.SYMTYPE, "../../outside"), "points outside"),
        (_tar_member("safe/link", tarfile.SYMTYPE, "/etc/passwd"), "link to absolute path"),
        (_tar_member("hard", tarfile.LNKTYPE, "../outside"), r"'\.\.' component"),
        (_tar_member("fifo", tarfile.FIFOTYPE), "not a regular file"),
    ],
)
def test_safe_extract_refuses_hostile_tar(tmp_path: Path, member: tarfile.TarInfo, match: str) -> None:
    archive = _tar_with(tmp_path / "evil.tar.gz", _tar_member("safe/ok.txt"), member)
    target = tmp_path / "target"
    with pytest.raises(ValueError, match=match) as info:
        safe_extract(archive, target)
    assert member.name in str(info.value)
    assert not (target / "safe" / "ok.txt").exists()  # checked before anything is written


def test_safe_extract_refuses_writing_through_a_link(tmp_path: Path) -> None:
    archive = _tar_with(
        tmp_path / "evil.tar", _tar_member("d", tarfile.SYMTYPE, "."), _tar_member("d/x.txt")
    )
    with pytest.raises(ValueError, match="through link member 'd'"):
        safe_extract(archive, tmp_path / "target")


def test_safe_extract_accepts_benign_tar_with_inner_link(tmp_path: Path) -> None:
    archive = _tar_with(
        tmp_path / "ok.tar.gz",
        _tar_member("top/a.txt"),
        _tar_member("top/sub/link", tarfile.SYMTYPE, "../a.txt"),
    )
    safe_extract(archive, tmp_path / "target")
    assert (tmp_path / "target" / "top" / "sub" / "link").read_bytes() == b"xxx"


@pytest.mark.parametrize("name, match", [("/abs/evil.txt", "absolute path"), ("ok/../../evil.txt", r"'\.\.'")])
def test_safe_extract_refuses_hostile_zip(tmp_path: Path, name: str, match: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/fine.txt", "fine")
        zf.writestr(zipfile.ZipInfo(name), "evil")
    with pytest.raises(ValueError, match=match) as info:
        safe_extract(archive, tmp_path / "target")
    assert name in str(info.value)
    assert not (tmp_path / "target" / "ok" / "fine.txt").exists()


def test_safe_extract_refuses_escaping_zip_symlink(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    info = zipfile.ZipInfo("link")
    info.external_attr = (0o120777 << 16)  # a Unix symlink
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "../../etc/passwd")
    with pytest.raises(ValueError, match="'link'.*points outside"):
        safe_extract(archive, tmp_path / "target")


def test_safe_extract_rejects_non_archives(tmp_path: Path) -> None:
    path = tmp_path / "plain.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        safe_extract(path, tmp_path / "target")


@pytest.mark.parametrize("colours, ceiling", [(2, 0.75), (3, 2 / 3), (4, 2 / 3), (6, 0.65), (8, 0.5 * (0.5 + 1 - 12 / 56))])
def test_additive_ceiling_is_the_best_score_threshold(colours: int, ceiling: float) -> None:
    """No rule 'same iff s(a) + s(b) > t' (or < t) beats the ceiling: random real scores s."""
    assert additive_ceiling(colours) == pytest.approx(ceiling)
    rng = np.random.default_rng(0)
    pairs = [(a, b) for a in range(colours) for b in range(colours) if a != b]
    best = 0.0
    for _ in range(300):
        s = rng.normal(size=colours)
        same, diff = 2 * s, np.array([s[a] + s[b] for a, b in pairs])
        for t in np.concatenate([same, diff]) + 1e-9:
            for sign in (1, -1):
                best = max(best, 0.5 * (sign * same > sign * t).mean() + 0.5 * (sign * diff <= sign * t).mean())
    assert best <= additive_ceiling(colours) + 1e-12
