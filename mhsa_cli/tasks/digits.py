"""``digits``: scikit-learn's bundled 8x8 handwritten digits as patch sequences.

Each image is cut into non-overlapping ``patch`` x ``patch`` squares, read in
row-major order, so a model sees a sequence of T = (8 / patch)^2 tokens with
F = patch^2 features each (pixel values scaled to [0, 1]). No download: the
data ships with scikit-learn.
"""

from __future__ import annotations

import torch

from ..errors import MhsaError
from . import OptionType, Split, TaskData, TaskInfo, register
from .split import check_fraction, stratified_split

PATCHES = (1, 2, 4)
LABELS = [str(d) for d in range(10)]


def _patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, 8, 8) images -> (N, T, F) patch sequences, T = (8/patch)^2, F = patch^2."""
    n, g = images.shape[0], 8 // patch
    x = images.reshape(n, g, patch, g, patch)  # (N, gy, py, gx, px)
    x = x.permute(0, 1, 3, 2, 4)  # (N, gy, gx, py, px)
    return x.reshape(n, g * g, patch * patch).contiguous()  # (N, T, F)


def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Return (N, 8, 8) float32 images in [0, 1] and (N,) int64 labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise MhsaError("task 'digits' needs scikit-learn: pip install 'mhsa[data]'") from None
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32) / 16.0  # (N, 8, 8)
    return images, torch.tensor(data.target, dtype=torch.long)  # (N,)


def build(seed: int = 0, patch: int = 2, val_fraction: float = 0.15,
          test_fraction: float = 0.2) -> TaskData:
    """Build the ``digits`` task with a deterministic stratified split.

    Args:
        seed: split seed.
        patch: patch side, one of 1, 2, 4 (T = 64, 16, 4 tokens of 1, 4, 16 features).
        val_fraction: validation share, in (0, 0.5].
        test_fraction: test share, in (0, 0.5].

    Returns:
        TaskData with float32 ``x`` of shape (N, T, F) and 10 classes.

    Raises:
        MhsaError: bad option, or scikit-learn missing.
    """
    try:
        patch = int(patch)
    except (TypeError, ValueError):
        raise MhsaError(f"digits task: patch must be one of 1, 2, 4, got {patch!r}") from None
    if patch not in PATCHES:
        raise MhsaError(f"digits task: patch must be one of 1, 2, 4, got {patch}")
    val_fraction = check_fraction("val_fraction", val_fraction, "digits task")
    test_fraction = check_fraction("test_fraction", test_fraction, "digits task")
    seed = int(seed)
    images, y = _load_digits()
    x = _patches(images, patch)  # (N, T, F)
    splits = []
    for idx in stratified_split(y.tolist(), val_fraction, test_fraction, seed):
        index = torch.tensor(idx, dtype=torch.long)
        split = Split(x[index], y[index])
        split._rows = idx  # source image indices, for tests and debugging
        splits.append(split)
    spec = dict(name="digits", seed=seed, patch=patch, val_fraction=val_fraction,
                test_fraction=test_fraction)
    t, f = x.shape[1], x.shape[2]
    return TaskData(spec, "features", 0, f, t, list(LABELS), *splits)


register(TaskInfo(
    name="digits",
    description="scikit-learn 8x8 handwritten digits as patch sequences (10 classes, no download)",
    input_kind="features",
    size="1,168 / 270 / 359 of 1,797 images",
    classes="10",
    build=build,
    needs="scikit-learn",
    train_defaults={"epochs": 40},  # 1,168 training images: 12 epochs reach ~90 %, 40 reach ~97 %
    options={
        "patch": "patch side 1, 2 or 4: 64, 16 or 4 tokens of 1, 4 or 16 pixels (default 2)",
        "val_fraction": "validation share of the 1797 images, stratified (default 0.15)",
        "test_fraction": "test share of the 1797 images, stratified (default 0.2)",
    },
    option_types={"patch": OptionType(int, 1, 4), "val_fraction": OptionType(float),
                  "test_fraction": OptionType(float)},
))
