"""Turn the raw files into train / val / test tensors that live on the training device.

The whole dataset is small (MNIST: 70k x 784 floats = 220 MB), so it is scaled once, moved to the
device once, and training slices batches by index: no DataLoader, no per-sample Python.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .acquire import SHA256, SIDE, SPLITS, DataError, ensure_files

CONTEXTS = {"train": "training", "val": "validation", "test": "test"}  # split -> what a tracker calls its use

# What a replicate (the run's `seed`) draws besides the training randomness (data.resample):
#   none   the validation split and the training subset come from data.split_seed alone: every replicate
#          trains on the same images, so a conclusion is about that one subset;
#   subset the validation split stays fixed (data.split_seed); the training subset is drawn again for every
#          replicate from the images the split leaves, so a conclusion is about "N images of this dataset";
#   split  the validation split is drawn again for every replicate too (and the subset with it).
# Within one replicate every setting sees the same images: comparisons stay paired.
RESAMPLE = ("none", "subset", "split")


@dataclass(frozen=True)
class SplitRecord:
    """What one split is, for the record (sweep/record/runs.py logs it as an MLflow dataset input).

    `digest` names exactly these images: a SHA-256 over the source files' SHA-256s and the indices picked
    from them, so two runs with the same digest saw the same images in the same order.
    """

    split: str  # train | val | test
    context: str  # training | validation | test
    name: str  # e.g. mnist-train
    digest: str  # 16 hex digits
    source: dict  # {"uri": raw folder, "files": {file: SHA-256}}
    profile: dict  # {"num_rows": ..., "split_seed": ..., ...}


@dataclass
class Splits:
    train_x: torch.Tensor  # float32 [N, 784], pixels scaled to [0, 1]
    train_y: torch.Tensor  # int64 [N]
    val_x: torch.Tensor  # 0 rows when val_size == 0
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    records: list[SplitRecord] = field(default_factory=list)  # one per non-empty split, from load_splits

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        return f"Splits({sizes}, features={self.train_x.shape[1]}, device={self.device})"


def load_splits(
    name: str,
    root: str | Path,
    *,
    val_size: int,
    split_seed: int,
    device: torch.device | str = "cpu",
    train_subset: int | None = None,
    download: bool = True,
    verify: bool = True,
    resample: str = "none",
    replicate: int = 0,
) -> Splits:
    """Official test set as test; val_size training images held out as val by a permutation drawn from
    `split_seed` (data.split_seed), and with `train_subset` that many of the rest. `resample` (RESAMPLE) says
    which of these the replicate index `replicate` (the run's seed) draws again."""
    raw = ensure_files(name, root, download=download, verify=verify)
    read: dict[str, str] = {}  # file -> SHA-256 of the very bytes these tensors are made of
    train_images, train_labels = read_raw(name, raw, train=True, digests=read)
    test_images, test_labels = read_raw(name, raw, train=False, digests=read)
    train_idx, val_idx = split_indices(
        len(train_labels),
        val_size=val_size,
        seed=split_seed,
        train_subset=train_subset,
        resample=resample,
        replicate=replicate,
    )
    device = torch.device(device)
    files = file_digests(name, raw, read, verify=verify)
    split_profile = {"split_seed": split_seed, "val_size": val_size, "train_subset": train_subset}
    if resample != "none":
        split_profile.update(resample=resample, replicate=replicate)
    records = [
        _record(name, raw, files, "train", train_idx, split_profile),
        _record(name, raw, files, "test", torch.arange(len(test_labels)), {}),
    ]
    if val_size:
        records.insert(1, _record(name, raw, files, "val", val_idx, split_profile))
    return Splits(
        *_to_device(train_images, train_labels, train_idx, device),
        *_to_device(train_images, train_labels, val_idx, device),
        *_to_device(test_images, test_labels, None, device),
        records=records,
    )


def file_digests(name: str, raw: Path, read: dict[str, str], *, verify: bool) -> dict[str, str]:
    """The SHA-256 of each raw file as it was read for this run (`read`: hashed from the bytes the tensors were
    made of; data/README.md says its cost), which is what a run records. With `verify`, each must be the published one:
    ensure_files' check skips re-hashing a file whose size and mtime it has seen, so a file changed in place
    with its mtime restored (cp -p, rsync -t, a backup) is caught here, before any training."""
    if verify:
        for f, got in read.items():
            want = SHA256[name][f]
            if got != want:
                raise DataError(
                    f"data file {raw / f} has SHA-256 {got[:16]}... but {name} expects {want[:16]}...: it "
                    f"changed after it was verified; delete it and re-run to fetch it again "
                    f"(data.verify=false skips this check)"
                )
    return dict(read)


def _record(name: str, raw: Path, files: dict[str, str], split: str, idx: torch.Tensor, profile: dict) -> SplitRecord:
    official = SPLITS["t10k" if split == "test" else "train"]
    h = hashlib.sha256()
    for f in official:
        h.update(files[f].encode())
    h.update(idx.to(torch.int64).numpy().astype("<i8").tobytes())
    return SplitRecord(
        split=split,
        context=CONTEXTS[split],
        name=f"{name}-{split}",
        digest=h.hexdigest()[:16],
        source={"uri": raw.resolve().as_uri(), "files": {f: files[f] for f in official}},
        profile={"num_rows": len(idx), **profile},
    )


IDX_UINT8 = 0x08  # the IDX type code of unsigned bytes: MNIST's and Fashion-MNIST's images and labels


def read_idx(path: Path, digests: dict[str, str] | None = None) -> torch.Tensor:
    """One raw IDX file as a uint8 tensor of its shape: magic (0, 0, type, ndim), ndim big-endian uint32 sizes,
    then the bytes (LeCun's format). Our own reader: torchvision's costs a 1.5 s import per process. With
    `digests`, the SHA-256 of the bytes read is stored there under the file's name."""
    data = path.read_bytes()
    if digests is not None:
        digests[path.name] = hashlib.sha256(data).hexdigest()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != IDX_UINT8:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = memoryview(data)[4 + 4 * ndim :]
    if len(body) != math.prod(dims):
        raise DataError(f"{path}: the header says {dims} but the file holds {len(body)} bytes")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).view(*dims)


def read_raw(
    name: str, raw: Path, *, train: bool, digests: dict[str, str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, 28, 28] images and int64 [N] labels from the raw IDX files of one official split (read_idx says
    what `digests` gets)."""
    image_file, label_file = SPLITS["train" if train else "t10k"]
    images, labels = read_idx(raw / image_file, digests), read_idx(raw / label_file, digests)
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE) or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{raw}: {tuple(images.shape)} images and {tuple(labels.shape)} labels; expected "
            f"[N, {SIDE}, {SIDE}] and [N]"
        )
    return images, labels.long()


def draw_seed(kind: str, split_seed: int, replicate: int) -> int:
    """The seed that draws `kind` ("split" or "subset") for one replicate: a hash of the three, the same on
    every machine and far from the small seeds users type (seed 1's subset is not split seed 1's split)."""
    digest = hashlib.sha256(f"{kind}:{split_seed}:{replicate}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # < 2**63: what torch.Generator.manual_seed takes


def split_indices(
    n: int, *, val_size: int, seed: int, train_subset: int | None = None, resample: str = "none", replicate: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_idx, val_idx) into the n training images; the same arguments give the same split on any machine.
    `seed` is data.split_seed; `resample` and `replicate` as in load_splits (RESAMPLE says what each draws)."""
    if resample not in RESAMPLE:
        raise DataError(f"data.resample={resample!r} is invalid: allowed: {', '.join(RESAMPLE)}")
    if not 0 <= val_size < n:
        raise DataError(f"data.val_size={val_size} must be between 0 and {n - 1}: the training file has {n} images")
    split_seed = draw_seed("split", seed, replicate) if resample == "split" else seed
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    if train_subset is not None:
        if not 1 <= train_subset <= len(train_idx):
            raise DataError(
                f"data.train_subset={train_subset} must be between 1 and {len(train_idx)} (the training images "
                f"left after holding out data.val_size={val_size}); use null for all of them"
            )
        if resample == "subset":
            pick = torch.randperm(
                len(train_idx), generator=torch.Generator().manual_seed(draw_seed("subset", seed, replicate))
            )
            train_idx = train_idx[pick[:train_subset]]
        else:
            train_idx = train_idx[:train_subset]
    return train_idx, val_idx


def _to_device(
    images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select, ship as uint8 (4x less to copy), then flatten and scale to float32 in [0, 1] on the device."""
    if idx is not None:
        images, labels = images[idx], labels[idx]
    x = images.reshape(len(images), SIDE * SIDE).to(device).float().div_(255)
    return x, labels.to(device)
