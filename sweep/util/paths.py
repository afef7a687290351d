"""Where the project is: the one home of PROJECT_ROOT (the configs, `runs/`, the commit a run records).

A leaf: it imports nothing of the project, so every layer may read it."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # sweep/util/paths.py -> the project
