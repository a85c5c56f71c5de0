"""Every checkpoint shipped in model_zoo/ has a card in model_zoo/README.md whose sha256 matches
the file, and loads strictly with load_model."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from guided_diffusion import load_model

ZOO = Path(__file__).resolve().parents[1] / "model_zoo"
CARDS = (ZOO / "README.md").read_text()


def card_sha256(name: str) -> str:
    """The sha256 row of the card headed ## `name`."""
    section = CARDS.split(f"## `{name}`", 1)
    assert len(section) == 2, f"model_zoo/README.md has no card for {name}"
    found = re.search(r"\| sha256 \| `([0-9a-f]{64})` \|", section[1].split("\n## ", 1)[0])
    assert found, f"the card of {name} has no sha256 row"
    return found.group(1)


@pytest.mark.parametrize("path", sorted(ZOO.glob("*.pt")), ids=lambda p: p.name)
def test_shipped_checkpoint_matches_its_card_and_loads(path: Path) -> None:
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card_sha256(path.name)
    model = load_model(str(path))
    assert model.image_size in (32, 64)


def test_the_zoo_ships_the_demo_prior() -> None:
    assert (ZOO / "demo64.pt").stat().st_size <= 25 * 2 ** 20  # the repository's size limit for weights
