"""Shared fixtures: tiny IDX datasets read by the real loaders, and the real CLI as a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.cli import run_cli, split_flags, tiny_overrides
from helpers.idx import write_idx_dataset


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """600 train / 200 test synthetic-but-learnable images in torchvision's MNIST layout."""
    root = tmp_path_factory.mktemp("idx")
    write_idx_dataset(root, "mnist", n_train=600, n_test=200)
    return root


@pytest.fixture
def cli(tiny_root, tmp_path):
    """cli(*overrides, epochs=2) -> CompletedProcess, with tiny data and a store under tmp_path."""

    def _run(*args: str, epochs: int = 2, timeout: float = 300, env: dict | None = None):
        flags, rest = split_flags(args)  # Hydra's argparse wants flags (and their values) before overrides
        return run_cli([*flags, *tiny_overrides(tiny_root, tmp_path, epochs), *rest], timeout=timeout, env=env)

    _run.out = tmp_path
    return _run


PG_FIXTURES = {"postgres_server", "postgres_url", "own_postgres", "password_postgres", "mlflow_server"}


def pytest_collection_modifyitems(items):
    """`pg` on every test that takes a PostgreSQL fixture, read from its fixtures so the marker cannot drift
    from what the test really starts (`-m "not pg"` leaves them out)."""
    for item in items:
        if PG_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pg)
