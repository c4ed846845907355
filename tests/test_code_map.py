"""docs/code-map.md lists every module as it is, and every module says what it is (and why, when it is long)."""
from pathlib import Path

from support import doc_script

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _generator():
    return doc_script("make_code_map")


def test_the_code_map_is_up_to_date():
    gen = _generator()
    assert (DOCS / "code-map.md").read_text(encoding="utf-8") == gen.render(), \
        "docs/code-map.md is out of date: run python docs/make_code_map.py"


def test_every_module_has_a_docstring_and_long_ones_say_why():
    assert _generator().problems() == []


def test_the_map_names_every_module():
    gen = _generator()
    text = (DOCS / "code-map.md").read_text(encoding="utf-8")
    for name, path in gen.modules():
        if path.name == "__init__.py":
            assert f"## `{name}`" in text
        else:
            assert f"[`{name.rsplit('.', 1)[1]}`](../{path.relative_to(gen.ROOT).as_posix()})" in text


def test_the_engine_imports_nothing_from_the_rooms_above_it():
    import ast
    gen = _generator()
    engine = gen.PACKAGE / "engine"
    upward = []
    for path in engine.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                parts = name.split(".")
                if parts[0] == "rnnlab" and len(parts) > 1 and parts[1] not in ("engine", "errors"):
                    upward.append(f"{path.relative_to(gen.ROOT)}:{node.lineno} imports {name}")
    assert upward == []
