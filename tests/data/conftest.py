from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from services.data.catalog import Catalog
from services.data.sample import SAMPLE_DIR

#: the real files the project does not ship (LGPL); tests on them skip where they are absent
SHARED = Path("/work/shared/data/real")


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    return Catalog(tmp_path / "catalog")


@pytest.fixture
def sample() -> Path:
    return SAMPLE_DIR


def sample_text(name: str) -> str:
    return gzip.decompress((SAMPLE_DIR / name).read_bytes()).decode()


def shared(path: str) -> Path:
    full = SHARED / path
    if not full.is_file():
        pytest.skip(f"{full} not here")
    return full


def catalog_entries(catalog: Catalog) -> list[str]:
    """Everything in the catalog's root but its lock file: nothing after a refused import."""
    if not catalog.root.exists():
        return []
    return sorted(str(p.relative_to(catalog.root)) for p in catalog.root.rglob("*")
                  if p.name != ".lock")
