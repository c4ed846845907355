"""Regenerate every figure, number and table of the tour (docs/guide.md and docs/guide.zh.md).

    python docs/make_guide.py            # the tour's code at full settings: about 4 minutes on two cores
    python docs/make_guide.py --small    # the same code on the test suite's small settings, into a temp folder
    python docs/make_guide.py --fill     # only rewrite the tables from docs/guide-numbers.json

The tour is its own script: the ```python cells of docs/guide.md (the source of the notebook, jupytext's
Markdown format) run here in order, in one namespace, with RNNLAB_TOUR_OUT=docs, so that they write
docs/figures/*.png|svg, docs/compare-adding/ and docs/guide-numbers.json. Then ``rnnlab check`` runs for its
transcript, and the tables of both tours between ``<!-- make_guide: NAME -->`` and ``<!-- /make_guide -->`` are
rewritten from the numbers (``render``; tests/test_guide.py checks that they match the committed JSON). The
numbers quoted in the prose are copied by hand from docs/guide-numbers.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
GUIDES = {"en": DOCS / "guide.md", "zh": DOCS / "guide.zh.md"}
NUMBERS = DOCS / "guide-numbers.json"
BLOCK = re.compile(r"(<!-- make_guide: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /make_guide -->)", re.S)


# ------------------------------------------------------------------ running the tour
def code_cells(path) -> list[str]:
    """The code cells of a tour, as jupytext reads the Markdown (```python fences; ```console stays text)."""
    import jupytext
    nb = jupytext.read(path)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def run_tour(path, out, small: bool) -> dict:
    """Execute the tour's code cells in order in one namespace (as a notebook would), with its output in ``out``;
    returns the NUMBERS the cells collected."""
    os.environ["RNNLAB_TOUR_OUT"] = str(out)
    os.environ["RNNLAB_TOUR_SMALL"] = "1" if small else ""
    sys.path.insert(0, str(ROOT / "src"))
    namespace = {"__name__": "__tour__"}
    t0 = time.time()
    for n, src in enumerate(code_cells(path), 1):
        exec(compile(src, f"{Path(path).name}, cell {n}", "exec"), namespace)
        print(f"-- cell {n} done ({time.time() - t0:.0f} s)", flush=True)
    return namespace["NUMBERS"]


def check_transcript() -> list[str]:
    """``rnnlab check``'s output, as the tour shows it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-m", "rnnlab", "check"], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True).stdout
    return out.rstrip("\n").splitlines()


# ------------------------------------------------------------------ the tables
def _g(v, digits=2):
    """A number as the tables print it: 3 significant digits, scientific beyond 1e-3 .. 1e4."""
    if v is None:
        return "-"
    v = float(v)
    if v == 0:
        return "0"
    if v != v:
        return "nan"
    if 1e-3 <= abs(v) < 1e4:
        return f"{float(f'{v:.{digits + 1}g}'):g}"          # 3 significant digits, never an exponent
    return f"{v:.{digits}e}".replace("e+0", "e+").replace("e-0", "e-")


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


WORDS = {
    "en": {"check": None,
           "tbptt": ["backward pass", "recall accuracy (the 10 recalled symbols)", "accuracy (all steps)",
                     "validation loss"],
           "full": "full BPTT", "cut": "truncated every {k} steps",
           "sweep": "spectral radius", "cells": {"rnn-linear": "linear RNN", "rnn-tanh": "tanh RNN",
                                                 "linear-orthogonal": "linear RNN, orthogonal W_hh",
                                                 "lstm": "LSTM (fresh)", "gru": "GRU (fresh)"},
           "rho": ["W_hh ({H} units)", "ρ", "σ_max", "‖W^{k}‖₂", "ρ^{k}", "σ_max^{k}"],
           "uniform": "uniform (torch's init), scaled to ρ = {r:g}", "orthogonal": "orthogonal, scaled to ρ = {r:g}",
           "clip": ["run", "clip", "outcome", "steps clipped", "largest gradient norm"],
           "exploding": "exploding: tanh RNN, T = {T}, ρ = σ_max = {rho:g}, SGD + momentum",
           "vanishing": "vanishing: tanh RNN, T = {T}, Adam",
           "off": "off", "stopped": "loss = inf at step {s}", "mse": "validation MSE {v}",
           "init": ["model", "hidden", "parameters", "‖dL/dh_0‖ / ‖dL/dh_{T}‖", "‖dh_{T}/ds_0‖₂", "ρ(W_hh)"],
           "gates": ["seed", "LSTM: mean f, fresh → trained", "LSTM units with mean f > 0.9 (of {H})",
                     "GRU: mean z, fresh → trained", "GRU units with mean z > 0.9 (of {Hg})"],
           "compare": ["model", "hidden", "parameters", "val MSE, mean over {n} seeds", "sd", "95 % interval",
                       "seeds reaching MSE ≤ {thr:g}", "median steps to it", "‖dL/dh_0‖ / ‖dL/dh_T‖ trained"],
           "underflow": "0 (underflow) in {z} of {n} seeds; the others at most {top}"},
    "zh": {"tbptt": ["反向传播", "回忆准确率（需回忆的 10 个符号）", "准确率（所有时间步）", "验证损失"],
           "full": "完整 BPTT", "cut": "每 {k} 步截断",
           "sweep": "谱半径", "cells": {"rnn-linear": "线性 RNN", "rnn-tanh": "tanh RNN",
                                      "linear-orthogonal": "线性 RNN，正交 W_hh",
                                      "lstm": "LSTM（初始化时）", "gru": "GRU（初始化时）"},
           "rho": ["W_hh（{H} 个单元）", "ρ", "σ_max", "‖W^{k}‖₂", "ρ^{k}", "σ_max^{k}"],
           "uniform": "均匀初始化（torch 默认），缩放到 ρ = {r:g}", "orthogonal": "正交初始化，缩放到 ρ = {r:g}",
           "clip": ["实验", "裁剪阈值", "结果", "被裁剪的步数", "最大梯度范数"],
           "exploding": "梯度爆炸：tanh RNN，T = {T}，ρ = σ_max = {rho:g}，SGD + 动量",
           "vanishing": "梯度消失：tanh RNN，T = {T}，Adam",
           "off": "不裁剪", "stopped": "第 {s} 步损失 = inf", "mse": "验证 MSE {v}",
           "init": ["模型", "隐藏单元", "参数量", "‖dL/dh_0‖ / ‖dL/dh_{T}‖", "‖dh_{T}/ds_0‖₂", "ρ(W_hh)"],
           "gates": ["种子", "LSTM：f 的均值，初始化 → 训练后", "均值 f > 0.9 的 LSTM 单元（共 {H} 个）",
                     "GRU：z 的均值，初始化 → 训练后", "均值 z > 0.9 的 GRU 单元（共 {Hg} 个）"],
           "compare": ["模型", "隐藏单元", "参数量", "验证 MSE，{n} 个种子的均值", "标准差", "95 % 区间",
                       "达到 MSE ≤ {thr:g} 的种子数", "达到所需步数（中位数）", "训练后 ‖dL/dh_0‖ / ‖dL/dh_T‖"],
           "underflow": "{n} 个种子中 {z} 个下溢为 0；其余至多 {top}"},
}


def _ratio(band, w) -> str:
    """A gradient ratio over seeds: the geometric mean and its 95 % interval, or, where some seed's ratio
    underflowed to 0 (no interval on the log scale), how many did and the largest of the others."""
    values = [v for v in band["values"] if v is not None]
    zeros = sum(v == 0 for v in values)
    if zeros:
        return w["underflow"].format(z=zeros, n=len(band["values"]), top=_g(max(values)))
    return f"{_g(band['geomean'])} [{_g(band['lo'])}, {_g(band['hi'])}]"


def render(numbers: dict, lang: str) -> dict:
    """{block name: Markdown} for one language, from the tour's numbers."""
    w = WORDS[lang]
    out = {}
    if "check" in numbers:
        out["check"] = "```console\n$ rnnlab check\n" + "\n".join(numbers["check"]) + "\n```\n"
    tb = numbers["tbptt"]
    out["tbptt"] = _table(w["tbptt"], [
        [w["full"] if k == "0" else w["cut"].format(k=k), _g(v["recall_accuracy"]), _g(v["accuracy"]), _g(v["loss"])]
        for k, v in tb["runs"].items()])
    sw = numbers["sweep"]
    out["sweep"] = _table([w["sweep"]] + [f"{r:g}" for r in sw["radii"]],
                          [[w["cells"][c]] + [_g(v) for v in vals] for c, vals in sw["at_distance"].items()])
    rs = numbers["rho_sigma"]
    k = rs["k"]
    out["rho_sigma"] = _table([h.format(H=rs["hidden"], k=k) for h in w["rho"]], [
        [w[m["init"]].format(r=m["rho"]), _g(m["rho"]), _g(m["sigma_max"]), _g(m["norm_power"]),
         _g(m["rho"] ** k), _g(m["sigma_max"] ** k)] for m in rs["matrices"]])
    cl = numbers["clipping"]
    rows = []
    for kind in ("exploding", "vanishing"):
        e = cl[kind]
        for c, r in e["runs"].items():
            outcome = (w["stopped"].format(s=r["stopped_at"]) if r.get("stopped_at") else
                       w["mse"].format(v=_g(r["final_mse"])))
            rows.append([w[kind].format(T=e["seq_len"], rho=e.get("radius", 0)), w["off"] if float(c) == 0 else _g(c),
                         outcome, f"{r['clipped_steps']} / {r['steps']}", _g(r["max_grad_norm"])])
    out["clipping"] = _table(w["clip"], rows)
    ini = numbers["init"]
    T = ini["seq_len"] - 1
    out["init"] = _table([h.format(T=T) for h in w["init"]], [
        [k, v["hidden"], v["parameters"], _g(v["grad_ratio"]), _g(v["jacobian_first"]), _g(v["spectral_radius"])]
        for k, v in ini["models"].items()])
    ga = numbers["gates"]
    out["gates"] = _table([h.format(H=ga["lstm_hidden"], Hg=ga["gru_hidden"]) for h in w["gates"]], [
        [a["seed"], f"{a['mean_init']:.2f} → {a['mean_trained']:.2f}", a["open_trained"],
         f"{b['mean_init']:.2f} → {b['mean_trained']:.2f}", b["open_trained"]]
        for a, b in zip(ga["lstm"], ga["gru"])])
    co = numbers["compare"]
    out["compare"] = _table([h.format(n=co["seeds"], thr=co["threshold"]) for h in w["compare"]], [
        [r["model"], r["hidden"], r["params"], _g(r["mean"]), _g(r["sd"]),
         f"[{_g(r['ci95'][0])}, {_g(r['ci95'][1])}]", f"{r['reached']} / {co['seeds']}",
         "-" if r["median_steps"] is None else f"{r['median_steps']:g}", _ratio(r["grad_ratio"], w)]
        for r in co["rows"]])
    return out


def fill(text: str, blocks: dict) -> str:
    """The tour's text with each marked block replaced by its rendering (a block without one is left)."""
    def sub(m):
        body = blocks.get(m.group("name"))
        return m.group(0) if body is None else m.group(1) + "\n" + body + "\n" + m.group(4)
    return BLOCK.sub(sub, text)


def fill_guides(numbers: dict) -> None:
    for lang, path in GUIDES.items():
        if path.exists():
            path.write_text(fill(path.read_text(encoding="utf-8"), render(numbers, lang)), encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="the test suite's small settings, into a temporary folder")
    ap.add_argument("--fill", action="store_true", help="only rewrite the tables from docs/guide-numbers.json")
    args = ap.parse_args(argv)
    if args.fill:
        fill_guides(json.loads(NUMBERS.read_text(encoding="utf-8")))
        return 0
    if args.small:
        out = Path(tempfile.mkdtemp(prefix="rnnlab-tour-"))
        numbers = run_tour(GUIDES["en"], out, small=True)
        print(f"small run: {out}")
        for name, body in render(json.loads((out / "guide-numbers.json").read_text()), "en").items():
            print(f"--- {name}\n{body}")
        return 0
    run_tour(GUIDES["en"], DOCS, small=False)
    numbers = json.loads(NUMBERS.read_text(encoding="utf-8"))
    numbers["check"] = check_transcript()
    NUMBERS.write_text(json.dumps(numbers, indent=1) + "\n", encoding="utf-8")
    fill_guides(numbers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
