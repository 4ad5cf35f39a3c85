"""Clean data for the TTA track: a source-training split and a test stream, for images and sentences.

Images (``load_images``):
  digits  scikit-learn's bundled 8×8 handwritten digits (1,797 images, UCI optdigits test set),
          intensities 0..16 scaled to [0, 1]; a stratified 60/40 split fixed by ``DIGITS_SPLIT``:
          1,078 source-train images and a 719-image test stream, each in a fixed shuffled order.
          Offline and always available: the default substrate.
  cifar10c CIFAR-10 (the python batches in ``data_dir/cifar-10-batches-py``: 50,000 source-train
          images, the 10,000 test images as the clean stream) and Hendrycks' pre-generated CIFAR-10-C
          (``data_dir/CIFAR-10-C/<corruption>.npy``: 5 severities × the same 10,000 test images, and
          labels.npy): the TTA papers' benchmark, read as released, never regenerated. Images (N, 3, 32, 32).
  mnist   MNIST's 10,000 test images (idx gzip files in ``data_dir``; MNIST's training images are not
          available here). First half (5,000) = source-train, second half (5,000) = test stream, in
          file order. Caveat: LeCun's page says the first 5,000 test images are cleaner and easier
          than the last 5,000 (different NIST writers), so the clean stream already carries a mild
          writer shift and its clean accuracy is a little below an i.i.d. split's.
Sentences (``load_sentences``): a single-sentence classification task from ``adaptbench.tasks``;
its train split (subset) trains the source, its validation split is the stream (synthetic tasks by
default; SST-2 from a GLUE folder: train subset → source, the 872-sentence dev set → stream).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptbench import tasks
from adaptbench.results import file_sha256

IMAGE_DATASETS = ("digits", "mnist", "cifar10c")
# Hendrycks & Dietterich (arXiv:1903.12261): the 15 CIFAR-10-C corruptions the TTA papers average over
CIFAR10C_SHIFTS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                   "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
                   "jpeg_compression")
CIFAR10_DIR, CIFAR10C_DIR = "cifar-10-batches-py", "CIFAR-10-C"
DIGITS_SPLIT = {"train_fraction": 0.6, "seed": 0}
MNIST_FILES = {"images": "t10k-images-idx3-ubyte.gz", "labels": "t10k-labels-idx1-ubyte.gz"}
IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}  # unsigned bytes; 3 or 1 dimensions


@dataclass(frozen=True)
class ImageData:
    train_x: np.ndarray  # (N_train, H, W) float32 in [0, 1]
    train_y: np.ndarray  # (N_train,) int64
    test_x: np.ndarray  # (N_test, H, W) float32 in [0, 1]: the clean test stream
    test_y: np.ndarray  # (N_test,) int64
    num_classes: int
    source: str  # where the pixels came from and how they were split, for run_info

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def channels(self) -> int:
        return 1 if self.train_x.ndim == 3 else int(self.train_x.shape[1])


@dataclass(frozen=True)
class SentenceData:
    task: str
    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]
    num_classes: int
    source: str
    synthetic: bool


def stratified_split(y: np.ndarray, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): round(train_fraction · n_c) of each class to train; both sets shuffled."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        cut = int(round(train_fraction * len(idx)))
        train.append(idx[:cut])
        test.append(idx[cut:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _digits() -> ImageData:
    from sklearn.datasets import load_digits

    raw = load_digits()
    x, y = (raw.images / 16.0).astype(np.float32), raw.target.astype(np.int64)
    tr, te = stratified_split(y, DIGITS_SPLIT["train_fraction"], DIGITS_SPLIT["seed"])
    source = (f"sklearn.datasets.load_digits (8x8); stratified split, train_fraction "
              f"{DIGITS_SPLIT['train_fraction']}, seed {DIGITS_SPLIT['seed']}")
    return ImageData(x[tr], y[tr], x[te], y[te], 10, source)


def read_idx(path: Path, kind: str) -> np.ndarray:
    """An idx file (gzip or plain) of unsigned bytes: images (N, H, W) or labels (N,)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic != IDX_MAGIC[kind]:
        raise ValueError(f"{path}: not an idx {kind} file (magic {magic:#010x}, expected {IDX_MAGIC[kind]:#010x})")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header promises shape {shape} but the file holds {data.size} values")
    return data.reshape(shape)


def _mnist(data_dir: str | Path | None) -> ImageData:
    if data_dir is None:
        raise ValueError(f"dataset 'mnist' needs data_dir: a folder with {MNIST_FILES['images']} "
                         "(e.g. ../shared/data/mnist)")
    folder = Path(data_dir)
    if not (folder / MNIST_FILES["images"]).is_file() and (folder / "mnist").is_dir():
        folder = folder / "mnist"  # a data root holding mnist/ works too
    paths = {k: folder / name for k, name in MNIST_FILES.items()}
    for kind, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"MNIST {kind} file not found: {path}")
    x, y = read_idx(paths["images"], "images"), read_idx(paths["labels"], "labels")
    if len(x) != len(y):
        raise ValueError(f"{folder}: {len(x)} images but {len(y)} labels")
    x, y = (x / 255.0).astype(np.float32), y.astype(np.int64)
    half = len(y) // 2
    source = (f"{paths['images'].parent.name}/{paths['images'].name} sha256 {file_sha256(paths['images'])[:16]}; "
              f"first {half} = source-train, last {len(y) - half} = test stream")
    return ImageData(x[:half], y[:half], x[half:], y[half:], 10, source)


def cifar10c_unavailable_reason(data_dir: str | Path | None) -> str | None:
    """Why a CIFAR-10-C source cannot run here (the files it reads), or None."""
    if data_dir is None:
        return f"needs data_dir holding {CIFAR10C_DIR}/ and {CIFAR10_DIR}/ (not given)"
    missing = [str(Path(data_dir) / rel) for rel in (f"{CIFAR10C_DIR}/labels.npy", f"{CIFAR10_DIR}/test_batch")
               if not (Path(data_dir) / rel).is_file()]
    return f"missing {', '.join(missing)}" if missing else None


# What a CIFAR-10 "python version" batch may reference: a dict of numpy arrays and lists. Anything else
# (a pickle can name any callable) is refused, so a data folder is data, never code.
_CIFAR_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                  ("numpy._core.multiarray", "scalar")}


def read_cifar_batch(path: Path) -> dict:
    """One CIFAR-10 batch file, unpickled with only numpy's array constructors allowed."""
    import pickle

    class ArraysOnly(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in _CIFAR_GLOBALS:
                raise pickle.UnpicklingError(f"it references {module}.{name}")
            return super().find_class(module, name)

    try:
        with open(path, "rb") as f:
            batch = ArraysOnly(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a CIFAR-10 batch ({e}); expected the 'python version' of CIFAR-10") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    return batch


def _cifar_batches(folder: Path, names) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10 batch not found: {path}")
        batch = read_cifar_batch(path)
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _cifar10(data_dir: str | Path | None, with_train: bool = True) -> ImageData:
    reason = cifar10c_unavailable_reason(data_dir)
    if reason:
        raise FileNotFoundError(f"dataset 'cifar10c' {reason}")
    folder = Path(data_dir) / CIFAR10_DIR
    test_x, test_y = _cifar_batches(folder, ["test_batch"])
    train_x, train_y = (_cifar_batches(folder, [f"data_batch_{i}" for i in range(1, 6)]) if with_train
                        else (test_x[:0], test_y[:0]))
    scale = lambda a: (a / 255.0).astype(np.float32)  # noqa: E731
    return ImageData(scale(train_x), train_y, scale(test_x), test_y, 10,
                     f"{folder.resolve().name} (train: data_batch_1-5; stream: test_batch) + {CIFAR10C_DIR}")


def load_cifar10c(data_dir: str | Path, shift: str, severity: int) -> np.ndarray:
    """The released CIFAR-10-C images of one corruption and severity: uint8 (10000, 3, 32, 32)."""
    if shift not in CIFAR10C_SHIFTS:
        raise ValueError(f"unknown CIFAR-10-C corruption '{shift}'; choose from {', '.join(CIFAR10C_SHIFTS)}")
    path = Path(data_dir) / CIFAR10C_DIR / f"{shift}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10-C file not found: {path}")
    block = np.load(path, mmap_mode="r")[(severity - 1) * 10000: severity * 10000]  # (10000, 32, 32, 3)
    return np.ascontiguousarray(block.transpose(0, 3, 1, 2))


def load_images(dataset: str, data_dir: str | Path | None = None) -> ImageData:
    """Clean source-train split and test stream of an image dataset (see the module docstring)."""
    if dataset == "digits":
        return _digits()
    if dataset == "mnist":
        return _mnist(data_dir)
    if dataset == "cifar10c":
        return _cifar10(data_dir)
    raise KeyError(f"Unknown image dataset '{dataset}'. Available: {', '.join(IMAGE_DATASETS)}")


def load_sentences(task: str = "syn_sentiment", data_dir: str | Path | None = None,
                   max_samples: int | None = None, seed: int = 0) -> SentenceData:
    """Source-train texts (train split) and the test stream (validation split) of a single-sentence
    classification task; ``max_samples`` caps each split with ``tasks.load_split``'s seeded subset."""
    spec = tasks.get_task(task)
    if spec.kind != "classification" or len(spec.text_fields) != 1:
        raise ValueError(f"task '{task}': TTA needs a single-sentence classification task "
                         f"(e.g. syn_sentiment, sst2), got {spec.kind} with fields {list(spec.text_fields)}")
    data_dir = None if data_dir is None else str(data_dir)
    train = tasks.load_split(spec, "train", data_dir, max_samples, seed)
    test = tasks.load_split(spec, "validation", data_dir, max_samples, seed)
    return SentenceData(task, [t[0] for t in train.texts], list(train.labels), [t[0] for t in test.texts],
                        list(test.labels), spec.num_labels, f"train: {train.source}; stream: {test.source}",
                        spec.is_synthetic)
