"""Image data for scoring: the bundled real CIFAR-10 and CIFAR-100 samples, .npz files, image folders, torchvision."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zico_fast.errors import DataError, ZiCoUserError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


@dataclass(frozen=True)
class Dataset:
    """What a data set name fixes together: the images shipped for it, the classifier's outputs and
    the per-channel normalisation (of the whole training set, as NAS benchmarks trained with)."""
    name: str
    bundle: Path
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_DATA = Path(__file__).parent / "data"
DATASETS = {
    # 1,024 real CIFAR-10 training images (data/README.md)
    "cifar10": Dataset("cifar10", _DATA / "cifar10_sample.npz", 10, CIFAR_MEAN, CIFAR_STD),
    # 2,000 real CIFAR-100 training images, 20 per fine label, stored class by class (draws are random)
    "cifar100": Dataset("cifar100", _DATA / "cifar100_sample.npz", 100,
                        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
DEFAULT_DATASET = "cifar10"


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise ZiCoUserError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def load_images(source: str | Path | None = None, dataset: str = DEFAULT_DATASET) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H, W, 3], labels int64 [N]) from `source`.

    source: None or "bundled" (the real images shipped for `dataset`: 1,024 of CIFAR-10, 2,000 of
    CIFAR-100); a `.npz` with arrays `x` ([N, H, W, 3] or [N, 3, H, W]) and `y`; a folder with one
    sub-folder of images per class; or "torchvision:<Dataset>:<root>" for a dataset already on disk.
    Pixel scale goes by dtype: uint8 images are 0-255, float images are taken as given (0-1).
    Images come back as stored (uint8 or float); `make_batches` scales them.
    """
    if source is None or str(source) == "bundled":
        return _load_npz(get_dataset(dataset).bundle)
    text = str(source)
    if text.startswith("torchvision:"):
        return _load_torchvision(text)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"no data at {path}: give a .npz file, an image folder, "
                                "'bundled', or 'torchvision:<Dataset>:<root>'")
    if path.is_dir():
        return _load_image_folder(path)
    if path.suffix == ".npz":
        return _load_npz(path)
    raise DataError(f"cannot read {path}: expected a .npz file or a folder of class sub-folders")


_NPZ_EXPECTED = "a .npz (numpy.savez) with arrays 'x' (images [N, H, W, 3] or [N, 3, H, W]) and 'y' (labels [N])"


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:  # never unpickle a file we were handed
            if "x" not in data or "y" not in data:
                raise DataError(f"{path}: found arrays {list(data)}; expected {_NPZ_EXPECTED}")
            x, y = data["x"], data["y"]
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, KeyError, OSError) as error:
        # numpy's own text suggests allow_pickle, which we never do: say what is wrong instead
        why = "it holds Python objects, which are never unpickled" if "pickle" in str(error) else \
            f"it is not a valid, complete .npz file ({type(error).__name__})"
        raise DataError(f"cannot read {path}: {why}; expected {_NPZ_EXPECTED}") from None
    if x.ndim == 4 and x.shape[1] == 3 and x.shape[-1] != 3:
        x = x.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    if x.ndim != 4 or x.shape[-1] != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{path}: expected x [N, H, W, 3] and y [N], got {x.shape} and {y.shape}")
    if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{path}: x has dtype {x.dtype}; expected uint8 (0-255) or float (0-1) images")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y has dtype {y.dtype}; expected integer class labels")
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: y holds the label {y.min()}; expected class indices 0, 1, ..., C-1")
    if x.dtype != np.uint8 and not np.isfinite(x).all():  # a NaN image would make every gradient NaN
        raise DataError(f"{path}: x holds NaN or infinite pixels; expected finite images")
    return x, y.astype(np.int64)


def _load_image_folder(root: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image  # pillow comes with matplotlib; only this path needs it

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() in _IMAGE_SUFFIXES:
                try:
                    with Image.open(file) as image:
                        images.append(np.asarray(image.convert("RGB")))
                except OSError as error:  # PIL's UnidentifiedImageError is an OSError, as is a truncated file
                    raise DataError(f"{file} is not a readable image ({error}); fix or remove it") from error
                labels.append(label)
    if not images:
        raise DataError(f"{root} holds no images in class sub-folders (root/<class>/<image>.png)")
    if len({im.shape for im in images}) != 1:
        raise DataError(f"images in {root} differ in size; resize them to one size first")
    return np.stack(images), np.array(labels, dtype=np.int64)


def _load_torchvision(spec: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        _, name, root = spec.split(":", 2)
    except ValueError:
        raise DataError(f"{spec!r}: use 'torchvision:<Dataset>:<root>', e.g. 'torchvision:CIFAR10:./data'") from None
    try:
        import torchvision.datasets as datasets
    except Exception as error:  # missing, or built for another torch (then its op registration raises)
        raise DataError(f"{spec!r} needs torchvision, which does not import ({type(error).__name__}: {error}); "
                        f"install the torchvision built for torch {torch.__version__}") from error
    if not hasattr(datasets, name):
        raise DataError(f"{spec!r}: torchvision.datasets has no {name!r}; e.g. 'torchvision:CIFAR10:{root}'")
    try:
        dataset = getattr(datasets, name)(root=root, train=True, download=False)
    except (RuntimeError, OSError) as error:  # torchvision's "Dataset not found or corrupted"
        raise DataError(f"{spec!r}: {error} (zico-fast never downloads; put the dataset under {root})") from error
    return np.asarray(dataset.data), np.asarray(dataset.targets, dtype=np.int64)


def make_batches(source: str | Path | None = None, batch_size: int = 128, num_batches: int = 2,
                 seed: int = 0, device: str | torch.device = "cpu", synthetic: bool = False,
                 num_classes: int = 10, resolution: int | None = None,
                 dataset: str = DEFAULT_DATASET) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`num_batches` disjoint batches drawn with `seed`, normalised with `dataset`'s statistics.

    dataset ("cifar10" or "cifar100", see DATASETS) picks the bundled images when `source` is None
    and the normalisation of any real images; a network scored on them needs the data set's class
    count of outputs (DATASETS[dataset].num_classes; the CLI builds it so).

    synthetic=True gives random normal images and labels instead (never implied: real data is
    the default because ZiCo's ranking depends on it). `resolution` resizes (bilinear). uint8
    images are divided by 255, float images are taken as already in [0, 1]. Batches are
    contiguous NCHW tensors; zico_fast.layout.with_layout gives them the engine's layout.
    """
    if batch_size < 1 or num_batches < 1:
        raise ValueError(f"batch_size and num_batches must be positive, got {batch_size} and {num_batches}")
    generator = torch.Generator().manual_seed(seed)
    needed = batch_size * num_batches
    if synthetic:
        size = resolution or 32
        x = torch.randn(needed, 3, size, size, generator=generator)
        y = torch.randint(0, num_classes, (needed,), generator=generator)
    else:
        images, labels = load_images(source, dataset)
        if needed > len(images):
            raise DataError(f"{num_batches} batches of {batch_size} need {needed} images but the data has "
                             f"{len(images)}; use fewer or smaller batches, or more data")
        pick = torch.randperm(len(images), generator=generator)[:needed].numpy()
        x = torch.from_numpy(images[pick]).permute(0, 3, 1, 2).float().contiguous()
        if images.dtype == np.uint8:
            x.div_(255)
        stats = get_dataset(dataset)
        mean = torch.tensor(stats.mean).view(1, 3, 1, 1)
        std = torch.tensor(stats.std).view(1, 3, 1, 1)
        x = (x - mean) / std
        y = torch.from_numpy(labels[pick])
        if resolution is not None and resolution != x.shape[-1]:
            x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x, y = x.contiguous().to(device), y.to(device)
    return [(x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]) for i in range(num_batches)]
