"""The docs stand on their own: every relative link and anchor in README.md and docs/
resolves inside the repository, the README stays short, and the pages of current figures
are what `bench/docs_figures.py` makes from `bench/results/`."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from promptcache.config import EngineConfig, RouterConfig, ServerConfig

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _outside_fences(path: Path) -> Iterator[tuple[int, str]]:
    fence = False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            fence = not fence
        elif not fence:
            yield n, line


def _anchors(path: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for _, line in _outside_fences(path) if line[:1] == "#"}


def _problems(page: Path) -> Iterator[str]:
    for n, line in _outside_fences(page):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            where = f"{page.relative_to(ROOT)}:{n}: {target}"
            if re.match(r"[a-z]+:", target):
                yield f"{where} points outside the repository"
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.is_relative_to(ROOT) or not dest.exists():
                yield f"{where} is missing"
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                yield f"{where} has no such heading"


def test_every_link_resolves_inside_the_repository() -> None:
    problems = [p for page in _pages() for p in _problems(page)]
    assert not problems, "\n".join(problems)


def test_every_setting_is_documented_with_its_flag() -> None:
    """Each field of the settings dataclasses has its row in serving/settings.md."""
    rows = (ROOT / "docs" / "serving" / "settings.md").read_text().splitlines()
    missing = []
    for cls in (EngineConfig, ServerConfig, RouterConfig):
        for f in dataclasses.fields(cls):
            flag = f.name.replace("_", "-")
            start = f"| `{f.name}` | `--"
            if not any(r.startswith(start) and f"{flag}` |" in r for r in rows):
                missing.append(f"{cls.__name__}.{f.name}")
    assert not missing, missing


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_current_figures_are_generated_from_the_results() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "docs_figures.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
