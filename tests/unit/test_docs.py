"""The documentation is checked like code: the generated config reference is current, every
relative link in the Markdown resolves inside the repository (anchors included), no page or
docstring points outside it, and the README stays a one-page entry."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from dnr.config import JobConfig
from dnr.config.docs import COMMAND, render, sections

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", "node_modules", ".pytest_cache", ".ruff_cache"}
MARKDOWN = sorted(p for p in REPO.rglob("*.md")
                  if not any(part in SKIP_DIRS or part.endswith(".egg-info")
                             for part in p.relative_to(REPO).parts))
DNR_SOURCES = sorted((REPO / "dnr").rglob("*.py"))
OUTSIDE = ("../shared", "DESIGN.md")

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _prose(text: str) -> str:
    """The text with fenced blocks and inline code removed: links there are not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def _links(path: Path) -> list[str]:
    return _LINK.findall(_prose(path.read_text()))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_the_markdown_pages_are_found():
    found = {_rel(p) for p in MARKDOWN}
    assert {"README.md", "bench/README.md", "cluster/README.md", "docs/design.md", "docs/daily-job.md",
            "docs/operations.md", "docs/method.md", "docs/data-contract.md",
            "docs/configuration.md"} <= found


# ---- (a) the generated page is current ----

def test_configuration_page_is_current():
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == render(), f"docs/configuration.md is stale: regenerate it with `{COMMAND}`"


# ---- (b) every relative link resolves ----

@pytest.mark.parametrize("page", MARKDOWN, ids=_rel)
def test_every_relative_link_resolves(page):
    broken = []
    for target in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif REPO not in dest.parents and dest != REPO:
            broken.append(f"{target} (outside the repository)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {_rel(dest)})")
    assert not broken, f"{_rel(page)}: broken links: {broken}"


def test_the_link_checker_sees_links_and_anchors():
    assert _links(REPO / "README.md"), "no link found in README.md"
    assert _slug("Public benchmark splits (ml-1m, gowalla)") == "public-benchmark-splits-ml-1m-gowalla"
    assert _slug("## `data`: Request-log rows to batches.".lstrip("# ")) == "data-request-log-rows-to-batches"
    assert _links_in("see [a](b.md) and `[c](d.md)` and\n```\n[e](f.md)\n```\n") == ["b.md"]


def _links_in(text: str) -> list[str]:
    return _LINK.findall(_prose(text))


# ---- (c) nothing points outside the repository ----

@pytest.mark.parametrize("page", MARKDOWN, ids=_rel)
def test_no_page_points_outside_the_repository(page):
    text = page.read_text()
    assert not [s for s in OUTSIDE if s in text], f"{_rel(page)} refers to {OUTSIDE}, which a clone does not have"


def _docstrings(path: Path):
    tree = ast.parse(path.read_text())
    for node in [tree, *ast.walk(tree)]:
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield getattr(node, "lineno", 1), doc
        body = getattr(node, "body", None)
        if isinstance(body, list):  # attribute docstrings: a string right after an assignment
            for stmt, nxt in zip(body, body[1:]):
                if (isinstance(stmt, (ast.Assign, ast.AnnAssign)) and isinstance(nxt, ast.Expr)
                        and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                    yield nxt.lineno, nxt.value.value


def test_no_docstring_points_outside_the_repository():
    found = [f"{_rel(p)}:{line}: {s}" for p in DNR_SOURCES for line, doc in _docstrings(p)
             for s in OUTSIDE if s in doc]
    assert not found, "docstrings citing pages a clone does not have (cite docs/<page>.md): " + "; ".join(found)


def test_every_docs_page_cited_in_the_code_exists():
    cited = {(f"{_rel(p)}", m) for p in DNR_SOURCES for m in re.findall(r"\bdocs/([\w.-]+\.md)", p.read_text())}
    missing = sorted(f"{where} cites docs/{page}" for where, page in cited if not (REPO / "docs" / page).is_file())
    assert not missing, missing


# ---- (d) the README is one page ----

def test_readme_is_under_150_lines():
    n = len((REPO / "README.md").read_text().splitlines())
    assert n < 150, f"README.md has {n} lines; move detail to docs/"


def test_readme_links_every_docs_page_and_keeps_the_test_command():
    readme = (REPO / "README.md").read_text()
    linked = {Path(t.partition("#")[0]).as_posix() for t in _links(REPO / "README.md")}
    pages = {_rel(p) for p in (REPO / "docs").glob("*.md")}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"
    assert "python -m pytest -q" in readme  # .ci/run and users run the README's test command


def test_bench_index_links_every_report():
    linked = {t.partition("#")[0] for t in _links(REPO / "bench" / "README.md")}
    reports = {f"reports/{p.name}" for p in (REPO / "bench" / "reports").glob("*.md")}
    assert reports and reports <= linked, f"reports missing from bench/README.md: {sorted(reports - linked)}"


# ---- (e) every config key is documented ----

def _documented_keys() -> dict[str, str]:
    keys = {}
    for line in (REPO / "docs" / "configuration.md").read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and re.fullmatch(r"`[a-z_]+\.[a-z0-9_]+`", cells[0]):
            keys[cells[0].strip("`")] = cells[3]
    return keys


def test_every_config_key_is_documented_with_help():
    documented = _documented_keys()
    expected = [f"{name}.{f.name}" for name, cls in sections().items() for f in dataclasses.fields(cls)]
    assert len(expected) == sum(len(dataclasses.fields(c)) for c in sections().values()) > 50
    assert {f.name for f in dataclasses.fields(JobConfig)} == set(sections())
    missing = [k for k in expected if k not in documented]
    no_help = [k for k in expected if k in documented and not documented[k]]
    assert not missing, f"config keys missing from docs/configuration.md (run `{COMMAND}`): {missing}"
    assert not no_help, f"config keys without a docstring in dnr/config/: {no_help}"
