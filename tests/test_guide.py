"""The tour (docs/guide.md and docs/guide.zh.md) is a notebook that runs, its two languages tell the same tour,
and its tables are the numbers docs/make_guide.py measured."""
import io
import json
import os
import re
import tokenize
from pathlib import Path

import pytest
from support import doc_script

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
DOCS = ROOT / "docs"
GUIDES = {"en": DOCS / "guide.md", "zh": DOCS / "guide.zh.md"}

jupytext = pytest.importorskip("jupytext")


def _make_guide():
    return doc_script("make_guide")


def _text(lang):
    return GUIDES[lang].read_text(encoding="utf-8")


def _code(source):
    """A code cell's tokens without its comments: the two languages may comment the code differently."""
    toks = tokenize.generate_tokens(io.StringIO(source).readline)
    return [(t.type, t.string) for t in toks if t.type not in (tokenize.COMMENT, tokenize.NL)]


@pytest.mark.parametrize("lang", GUIDES)
def test_the_markdown_pairs_with_a_notebook(lang):
    """The Markdown is the source: it reads as a notebook and writes back unchanged (jupytext's pairing)."""
    nb = jupytext.reads(_text(lang), fmt="md")
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert sum(c.cell_type == "code" for c in nb.cells) >= 10
    # the header (an HTML comment, hidden on GitHub) gains jupytext's version fields; everything after it is kept
    assert jupytext.writes(nb, fmt="md").split("-->\n", 1)[1] == _text(lang).split("-->\n", 1)[1]


def test_both_languages_have_the_same_sections_commands_figures_tables_and_code():
    def parts(text):
        nb = jupytext.reads(text, fmt="md")
        return {"sections": re.findall(r"^## (\d+)\.", text, re.M),
                "subsections": len(re.findall(r"^### ", text, re.M)),
                "commands": re.findall(r"^```console\n(.*?)^```", text, re.M | re.S),
                "figures": re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text),
                "tables": re.findall(r"<!-- make_guide: (\w+) -->", text),
                "code": [_code(c.source) for c in nb.cells if c.cell_type == "code"]}
    en, zh = parts(_text("en")), parts(_text("zh"))
    assert en["sections"] == [str(n) for n in range(1, 8)]           # the lab's presets name chapters 1-6
    for key in en:
        assert en[key] == zh[key], key
    for fig in en["figures"]:
        assert (DOCS / fig).is_file(), fig


def test_the_chinese_tour_has_the_glossary():
    text = _text("zh")
    for term in ("遗忘门", "输入门", "输出门", "细胞状态", "更新门", "重置门", "梯度消失", "梯度爆炸", "梯度裁剪"):
        assert f"| {term}" in text, term


def test_the_tables_are_the_measured_numbers():
    gen = _make_guide()
    numbers = json.loads((DOCS / "guide-numbers.json").read_text(encoding="utf-8"))
    assert numbers["small"] is False                                  # the page's numbers are the full run's
    for lang in GUIDES:
        text = _text(lang)
        assert gen.fill(text, gen.render(numbers, lang)) == text, \
            f"docs/{GUIDES[lang].name}'s tables differ from docs/guide-numbers.json: run python docs/make_guide.py --fill"


@pytest.mark.parametrize("lang", GUIDES)
def test_the_tour_runs_as_a_notebook(lang, tmp_path, monkeypatch):
    """Every code cell of the tour, executed by a Jupyter kernel on the small settings (RNNLAB_TOUR_SMALL=1)."""
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("RNNLAB_TOUR_SMALL", "1")
    monkeypatch.setenv("RNNLAB_TOUR_OUT", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = jupytext.reads(_text(lang), fmt="md")
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(DOCS)}}).execute()
    numbers = json.loads((tmp_path / "guide-numbers.json").read_text(encoding="utf-8"))
    assert numbers["small"] is True
    assert numbers["gru_jacobian"]["max_difference"] < 1e-12       # the GRU's Jacobian as the tour writes it
    assert numbers["layer"]["max_difference"] < 1e-12
    assert max(numbers["gradcheck"].values()) < 1e-6
    for name in ("sweep", "rho_sigma", "tbptt", "clipping", "init_grad_norms", "gates_per_unit", "seeds_grad_norms"):
        assert (tmp_path / "figures" / f"{name}.png").is_file(), name
    assert (tmp_path / "compare-adding" / "figures" / "learning_curves.png").is_file()
