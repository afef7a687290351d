"""Write tiny but real-format IDX datasets, so tests run the real loaders without the real data.

Images are learnable on purpose: class c is a bright blob at the c-th of 10 spots on a ring,
jittered by a couple of pixels and drawn over faint noise, so a small MLP gets well above chance
in a few epochs, while dropout still has something to regularize.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
SIDE = 28


def write_idx_dataset(
    root: str | Path, name: str = "mnist", n_train: int = 600, n_test: int = 200, seed: int = 0
) -> Path:
    """Write the 4 IDX files in torchvision's layout under root; return the raw folder."""
    raw = Path(root) / FOLDERS[name] / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images, labels = make_images(n, rng)
        write_images(raw / f"{split}-images-idx3-ubyte", images)
        write_labels(raw / f"{split}-labels-idx1-ubyte", labels)
    return raw


def make_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 [28, 28] images with balanced labels 0..9 in random order."""
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    angle = 2 * np.pi * labels / 10
    cy = 14 + 8 * np.sin(angle) + rng.uniform(-2, 2, n)
    cx = 14 + 8 * np.cos(angle) + rng.uniform(-2, 2, n)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    dist2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    blob = rng.uniform(150, 255, (n, 1, 1)) * np.exp(-dist2 / (2 * 2.5**2))
    noise = rng.uniform(0, 40, (n, SIDE, SIDE))
    return np.clip(blob + noise, 0, 255).astype(np.uint8), labels


def write_images(path: Path, images: np.ndarray, *, magic: int = 2051) -> None:
    """IDX3: big-endian magic, count, rows, cols, then the pixels."""
    n, rows, cols = images.shape
    Path(path).write_bytes(struct.pack(">IIII", magic, n, rows, cols) + images.astype(np.uint8).tobytes())


def write_labels(path: Path, labels: np.ndarray, *, magic: int = 2049) -> None:
    """IDX1: big-endian magic, count, then one byte per label."""
    Path(path).write_bytes(struct.pack(">II", magic, len(labels)) + np.asarray(labels, np.uint8).tobytes())
