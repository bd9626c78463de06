"""Data loading: pixel scale by dtype, contiguous batches, and one clear error for unreadable or unusable .npz files."""
import numpy as np
import pytest
import torch

from zico_fast.data import CIFAR_MEAN, CIFAR_STD, make_batches
from zico_fast.errors import DataError, ZiCoUserError


def normalised(images_01: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images_01).permute(0, 3, 1, 2).float()
    return (x - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_uint8_is_scaled_and_float_is_taken_as_given(tmp_path, layout):
    rng = np.random.default_rng(0)
    as_uint8 = rng.integers(0, 256, (8, 5, 5, 3), dtype=np.uint8)
    as_float = (as_uint8 / 255).astype(np.float32)
    for name, x in (("u8", as_uint8), ("f32", as_float)):
        stored = x if layout == "nhwc" else x.transpose(0, 3, 1, 2)
        np.savez(tmp_path / f"{name}.npz", x=stored, y=np.arange(8) % 3)
    got_u8 = make_batches(tmp_path / "u8.npz", batch_size=4, num_batches=2)
    got_f32 = make_batches(tmp_path / "f32.npz", batch_size=4, num_batches=2)
    pick = torch.randperm(8, generator=torch.Generator().manual_seed(0))[:8].numpy()
    want = normalised(as_float[pick])
    for (x8, _), (xf, _), i in zip(got_u8, got_f32, range(2)):
        torch.testing.assert_close(x8, want[4 * i:4 * i + 4], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(xf, want[4 * i:4 * i + 4], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("resolution", [None, 40])
def test_batches_are_contiguous_nchw(resolution):
    for x, y in make_batches(batch_size=4, num_batches=2, resolution=resolution):
        assert x.is_contiguous() and x.shape[1] == 3 and y.dtype == torch.int64


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage" * 10, "truncated", "pickled", "no_y", "bad_shape"])
def test_unreadable_npz_gives_one_clear_error(tmp_path, content):
    path = tmp_path / "data.npz"
    if content == "truncated":
        np.savez(path, x=np.zeros((4, 5, 5, 3), np.uint8), y=np.zeros(4, np.int64))
        path.write_bytes(path.read_bytes()[:100])
    elif content == "pickled":
        np.savez(path, x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4, np.int64))
    elif content == "no_y":
        np.savez(path, x=np.zeros((4, 5, 5, 3), np.uint8))
    elif content == "bad_shape":
        np.savez(path, x=np.zeros((4, 5, 5), np.uint8), y=np.zeros(4, np.int64))
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=r"data\.npz.*(expected|x \[N)") as caught:
        make_batches(path, batch_size=2, num_batches=2)
    assert isinstance(caught.value, ZiCoUserError) and "allow_pickle" not in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("bad, message", [
    ("negative_label", r"y holds the label -1; expected class indices"),
    ("nan_pixel", r"x holds NaN or infinite pixels"),
    ("inf_pixel", r"x holds NaN or infinite pixels"),
])
def test_data_that_would_score_nan_or_crash_the_loss_is_refused(tmp_path, bad, message):
    x = np.random.default_rng(0).random((4, 5, 5, 3)).astype(np.float32)
    y = np.arange(4) % 3
    if bad == "negative_label":
        y[2] = -1
    else:
        x[1, 2, 3, 0] = np.nan if bad == "nan_pixel" else np.inf
    np.savez(tmp_path / "data.npz", x=x, y=y)
    with pytest.raises(DataError, match=message):
        make_batches(tmp_path / "data.npz", batch_size=2, num_batches=2)


def test_image_folder_with_an_unreadable_file_names_it(tmp_path):
    from PIL import Image
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i, mode in enumerate(("RGB", "L", "RGBA")):
            Image.fromarray(np.full((6, 6, 3), 40 * i, dtype=np.uint8)).convert(mode).save(tmp_path / name / f"{i}.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image suffix: ignored")
    batches = make_batches(tmp_path, batch_size=3, num_batches=2)
    assert [tuple(x.shape) for x, _ in batches] == [(3, 3, 6, 6)] * 2
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png is not a readable image.*fix or remove it"):
        make_batches(tmp_path, batch_size=3, num_batches=2)


def fake_torchvision(root, datasets_source):
    """A stand-in torchvision package on sys.path, for the error paths (the real CPU wheel is not on
    this project's index)."""
    package = root / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "datasets.py").write_text(datasets_source)
    return root


@pytest.mark.parametrize("source, message", [
    ("raise RuntimeError('operator torchvision::nms does not exist')",
     r"needs torchvision, which does not import \(RuntimeError: operator.*install the torchvision built for torch"),
    ("class CIFAR10:\n    def __init__(self, root, train, download):\n"
     "        raise RuntimeError('Dataset not found or corrupted.')\n",
     r"Dataset not found or corrupted.*never downloads; put the dataset under /nowhere"),
    ("", r"torchvision\.datasets has no 'CIFAR10'"),
])
def test_torchvision_source_errors_are_one_clear_line(tmp_path, monkeypatch, source, message):
    import sys
    monkeypatch.syspath_prepend(str(fake_torchvision(tmp_path, source)))
    for module in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, module)  # a real one comes back after the test
    try:
        with pytest.raises(DataError, match=message):
            make_batches("torchvision:CIFAR10:/nowhere", batch_size=2, num_batches=2)
    finally:  # the stand-in must not outlive the test
        sys.modules.pop("torchvision", None)
        sys.modules.pop("torchvision.datasets", None)
