"""Shared fixtures: where the golden checkpoints live, and seeded generators."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The project's shared/ folder sits beside the clone (as on CI); GOLDEN_DIR overrides it.
CHECKPOINT_DIR = Path(os.environ.get("GOLDEN_DIR", REPO.parent / "shared" / "checkpoints"))


def checkpoint_file(name: str) -> Path:
    path = CHECKPOINT_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the tests need the project's shared/checkpoints "
                                f"beside the repository (or GOLDEN_DIR pointing at it)")
    return path


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
