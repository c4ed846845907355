"""The docs describe the code as it is: the CLI reference is the parser's, and every option says what it does."""
import argparse
from pathlib import Path

from support import doc_script

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _load(name):
    return doc_script(name)


def test_the_cli_reference_is_what_the_parser_prints():
    gen = _load("make_cli_reference")
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == gen.render(), \
        "docs/cli.md is out of date: run python docs/make_cli_reference.py"


def test_every_option_of_every_command_says_what_it_does():
    from rnnlab.cli.parser import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    silent = [f"{name} {a.option_strings or a.dest}" for name, p in sub.choices.items() for a in p._actions
              if not isinstance(a, argparse._HelpAction) and len((a.help or "").split()) < 2]
    assert silent == []


def test_every_doc_page_is_in_the_index():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in DOCS.glob("*.md") if p.name != "README.md")
    assert [p for p in pages if f"({p})" not in index] == []


def test_relative_links_of_the_readme_and_the_docs_resolve():
    import re
    root = DOCS.parent
    broken = []
    for page in [root / "README.md", *DOCS.glob("*.md")]:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(root)}: {target}")
    assert broken == []
