"""The README is a landing page: its quick start holds exactly the two commands (the second is the one
.ci/run runs), it stays under 12 KB, and every relative link of README.md and docs/ points to a file
or folder of the repository (and to a heading that exists, where it names one)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README] + sorted((REPO / "docs").rglob("*.md"))

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`[^`]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> List[str]:
    """The lines outside fenced code blocks, with inline code spans blanked."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        lines.append("" if fenced else CODE_SPAN.sub("", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text lower-cased, punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2 suffixes for repeats."""
    seen: Dict[str, int] = {}
    out = set()
    for line in prose_lines(path.read_text(encoding="utf-8")) if path.suffix == ".md" else []:
        found = HEADING.match(line)
        if not found:
            continue
        base = slug(found.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path, root: Path) -> List[str]:
    """Relative links of `page` whose target is missing, outside `root`, or names a missing heading."""
    broken = []
    for number, line in enumerate(prose_lines(page.read_text(encoding="utf-8")), 1):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(root)}:{number}: {target}"
            if not dest.is_relative_to(root.resolve()) or not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where} (no heading with that anchor)")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page, REPO) == []


def test_the_link_check_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Failure behaviour\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#failure-behaviour) [dir](docs/) [web](https://x.org/y)\n"
        "`[in code](missing.md)`\n```\n[fenced](missing.md)\n```\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#resume) ![img](docs/x.png) [out](../outside.md)\n",
        encoding="utf-8")
    found = broken_links(page, tmp_path)
    assert [f.split(": ", 1)[1] for f in found] == [
        "docs/b.md (no such file)", "docs/a.md#resume (no heading with that anchor)",
        "docs/x.png (no such file)", "../outside.md (no such file)"]


def test_slug_follows_github() -> None:
    assert slug("DiffPIR (`samplers/diffpir.py`, name `diffpir`)") == "diffpir-samplersdiffpirpy-name-diffpir"
    assert slug("Configs and `--set`") == "configs-and---set"
    assert slug("The methods side by side on real images") == "the-methods-side-by-side-on-real-images"


def quick_start_blocks() -> List[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```bash\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def test_readme_quick_start_has_the_two_commands() -> None:
    first, second = quick_start_blocks()  # exactly two bash blocks
    assert first.strip() == ("python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt "
                             "&& python scripts/sample.py --config configs/demo/sr2.yaml")
    assert (REPO / "configs" / "demo" / "sr2.yaml").is_file() and (REPO / "requirements.txt").is_file()
    activate, test_command = second.strip().split(" && ")
    assert activate == ". .venv/bin/activate"
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command == "python -m pytest -q" and test_command in ci  # .ci/run runs the README's command


def test_readme_is_a_landing_page() -> None:
    assert len(README.read_bytes()) <= 12 * 1024
