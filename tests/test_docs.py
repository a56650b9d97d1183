"""The README and docs/: every relative link leads to a file that exists, and every #anchor to a
heading in it (GitHub's anchors: lower case, punctuation dropped, spaces as hyphens)."""
import re

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def anchors(page):
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", page.read_text(), re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_and_anchor_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code is not linked
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: no heading #{anchor} in {linked.name}"


def test_the_readme_is_a_front_door():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_block_compiles_and_no_internal_issue_is_named(page):
    """The README's example also runs (tests/pruning/test_readme.py); the others at least
    compile. Issue numbers mean nothing to a reader."""
    text = page.read_text()
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        compile(block, str(page), "exec")
    assert not re.search(r"\bissue\b", re.sub(r"```.*?```", "", text, flags=re.S), re.I), \
        f"{page.name} names an issue"


CODE = [p for p in REPO.rglob("*.py")  # the tests name the files they write: not these
        if not {".venv", ".git", "tests"} & set(p.relative_to(REPO).parts)]
HEADINGS = {h.strip() for page in PAGES for h in re.findall(r"^#+ (.*)$", page.read_text(), re.M)}


@pytest.mark.parametrize("module", CODE, ids=lambda p: str(p.relative_to(REPO)))
def test_the_files_and_sections_the_code_points_to_exist(module):
    """A path like `training/fit.py` or `docs/papers.md` in a docstring or comment is a file of
    the repo (or of Keras, `keras/src/...`); a section quoted as (README, "Heading") is a
    heading of the README or docs/."""
    text = module.read_text()
    for ref in re.findall(r"(?<![\w./-])((?:[\w-]+/)+[\w-]+\.(?:py|md|sh))\b", text):
        assert ref.startswith("keras/") or (REPO / ref).exists() or (
            module.parent / ref).exists(), f"{ref} does not exist"
    for heading in re.findall(r'README, "([^"]+)"', text):
        assert " ".join(heading.split()) in HEADINGS, f'no heading "{heading}"'
