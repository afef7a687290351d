"""Turn the raw files into train / val / test tensors that live on the training device.

The whole dataset is small (MNIST: 70k x 784 floats = 220 MB), so it is scaled once, moved to the
device once, and training slices batches by index: no DataLoader, no per-sample Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .acquire import FOLDERS, SIDE, DataError, ensure_files


@dataclass
class Splits:
    train_x: torch.Tensor  # float32 [N, 784], pixels scaled to [0, 1]
    train_y: torch.Tensor  # int64 [N]
    val_x: torch.Tensor  # 0 rows when val_size == 0
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        return f"Splits({sizes}, features={self.train_x.shape[1]}, device={self.device})"


def load_splits(name: str, root: str | Path, *, val_size: int, seed: int, device: torch.device | str = "cpu",
                train_subset: int | None = None, download: bool = True, verify: bool = True) -> Splits:
    """Official test set as test; val_size training images held out by a seeded permutation as val."""
    raw = ensure_files(name, root, download=download, verify=verify)
    train_images, train_labels = read_raw(name, raw, train=True)
    test_images, test_labels = read_raw(name, raw, train=False)
    train_idx, val_idx = split_indices(len(train_labels), val_size=val_size, seed=seed, train_subset=train_subset)
    device = torch.device(device)
    return Splits(
        *_to_device(train_images, train_labels, train_idx, device),
        *_to_device(train_images, train_labels, val_idx, device),
        *_to_device(test_images, test_labels, None, device),
    )


def read_raw(name: str, raw: Path, *, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, 28, 28] images and int64 [N] labels, read by torchvision's own IDX reader."""
    from torchvision import datasets  # imported here: costs ~1 s and only loading needs it

    ds = getattr(datasets, FOLDERS[name])(str(raw.parent.parent), train=train, download=False)
    images, labels = ds.data, ds.targets
    if images.dtype != torch.uint8 or images.shape[1:] != (SIDE, SIDE) or len(images) != len(labels):
        # torchvision prefers a legacy processed/*.pt cache over raw/ when one exists
        raise DataError(
            f"torchvision read {tuple(images.shape)} {images.dtype} images / {len(labels)} labels from "
            f"{raw.parent}; if {raw.parent / 'processed'} exists, delete it and re-run"
        )
    return images, labels.long()


def split_indices(n: int, *, val_size: int, seed: int, train_subset: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_idx, val_idx) into the n training images; a fixed seed gives the same split on any machine."""
    if not 0 <= val_size < n:
        raise DataError(f"data.val_size={val_size} must be between 0 and {n - 1}: the training file has {n} images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    if train_subset is not None:
        if not 1 <= train_subset <= len(train_idx):
            raise DataError(
                f"data.train_subset={train_subset} must be between 1 and {len(train_idx)} (the training images "
                f"left after holding out data.val_size={val_size}); use null for all of them"
            )
        train_idx = train_idx[:train_subset]
    return train_idx, val_idx


def _to_device(images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor | None, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Select, ship as uint8 (4x less to copy), then flatten and scale to float32 in [0, 1] on the device."""
    if idx is not None:
        images, labels = images[idx], labels[idx]
    x = images.reshape(len(images), SIDE * SIDE).to(device).float().div_(255)
    return x, labels.to(device)
