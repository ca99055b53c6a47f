"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperrun.images import ImageStore
from hyperrun.store import Store

# ---- image store fixtures (tests/test_images.py, tests/test_layers.py) ----------------------
# Tar, docker-save and OCI-layout builders live in tests/helpers.py.


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """An empty hyperrun store in a temporary directory."""
    s = Store(tmp_path / "store")
    s.ensure()
    return s


@pytest.fixture
def images(store: Store) -> ImageStore:
    return ImageStore(store)

# ---- end of image store fixtures -----------------------------------------------------------
