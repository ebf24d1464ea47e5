"""The documentation site stays complete: the CLI reference covers every subcommand and option, every page is
in the mkdocs nav (and every nav entry exists), links stay inside docs/, and the loss reference names every
export of the loss core. No mkdocs build needed (`make docs` does that, strictly)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from mmcontrast.cli import build_parser

    parser = build_parser()
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(commands.choices)


def _cli_sections() -> dict[str, str]:
    """docs/cli.md cut at its `## \\`mmcontrast NAME\\`` headings: name -> section text."""
    text = (DOCS / "cli.md").read_text()
    parts = re.split(r"^## `mmcontrast ([\w-]+)`\s*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_cli_reference_documents_every_subcommand_and_option(name):
    sections = _cli_sections()
    assert name in sections, f"docs/cli.md has no '## `mmcontrast {name}`' section"
    section = sections[name]
    missing = []
    for action in _subcommands()[name]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            missing += [option for option in action.option_strings if f"`{option}" not in section]
        else:  # a positional: its name (any case, e.g. MODEL_DIR for model_dir) and its choices
            names = {action.dest, action.metavar} - {None}
            if not any(re.search(rf"\b{re.escape(str(n))}\b", section, re.IGNORECASE) for n in names):
                missing.append(action.dest)
            missing += [f"{action.dest}={choice}" for choice in action.choices or () if str(choice) not in section]
    assert not missing, f"docs/cli.md, section mmcontrast {name}, does not document: {missing}"


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    return []


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config.get("docs_dir", "docs") == "docs"
    nav = [page for page in _nav_pages(config["nav"]) if not re.match(r"^[a-z]+://", page)]
    assert len(nav) == len(set(nav)), f"pages listed twice in the nav: {sorted(p for p in nav if nav.count(p) > 1)}"
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert not pages - set(nav), f"pages missing from mkdocs.yml's nav: {sorted(pages - set(nav))}"
    assert not set(nav) - pages, f"nav entries with no file under docs/: {sorted(set(nav) - pages)}"


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", sorted(path.name for path in DOCS.glob("*.md")))
def test_relative_links_resolve_inside_docs(page):
    """mkdocs --strict fails on a link to a missing page or to a file outside docs/ (e.g. ../recipes/x.yaml)."""
    text = FENCE.sub("", (DOCS / page).read_text())
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (DOCS / target.split("#")[0]).resolve()
        if not path.is_relative_to(DOCS.resolve()) or not path.exists():
            broken.append(target)
    assert not broken, f"docs/{page} links outside docs/ or to missing files: {broken}"


def test_loss_reference_names_every_export():
    from mmcontrast import losses

    text = (DOCS / "losses.md").read_text()
    missing = [name for name in losses.__all__ if not re.search(rf"\b{re.escape(name)}\b", text)]
    assert not missing, f"docs/losses.md does not mention: {missing}"
