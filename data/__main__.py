"""`python -m data fetch [mnist|fashion_mnist] [--root DIR]`: acquire and verify the raw IDX files."""

import argparse
import sys
from pathlib import Path

from data import DATASETS, DataError, ensure_files

ROOT = Path(__file__).resolve().parent / "files"  # data/files, beside this package


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m data")
    ap.add_argument("command", choices=["fetch"])
    ap.add_argument("dataset", nargs="?", default="mnist", choices=DATASETS)
    ap.add_argument("--root", default=str(ROOT))
    args = ap.parse_args()
    try:
        raw = ensure_files(args.dataset, args.root)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: verified IDX files in {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
