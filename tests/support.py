"""What the tests share: the backends and compiled strategies by name, the cells, the vector widths, and the
torch twin of a layer. One meaning per name; test files import from here (``from support import ...``; pytest
puts tests/ on the path, pyproject's ``pythonpath``), never from conftest.py, which holds fixtures and hooks only.

    ROOT           the repository's root folder (ROOT / "src", "examples", "configs", ...)
    FIXTURES       tests/fixtures: the data files the tests read (a small UEA file, the legacy run and estimator)
    HAS_NUMBA      whether the compiled paths run here (Numba installed)
    needs_numba    skip mark for a test of the compiled paths
    REFERENCE      "numpy": the NumPy reference every other path is checked against
    COMPILED       the compiled backends by the name a layer takes: "loop", "split" ([] without Numba)
    BACKENDS       [REFERENCE] + COMPILED: every classic backend a user names (and the gradient checks run on)
    STRATEGIES     every compiled strategy: the loop with one-row products ("loop"), with its packed block
                   products and fused [x h 1] product from one row ("loop-packed"), and the batch split ("split");
                   each kind of product compiles its own loops, so the suites that compare the compiled paths
                   with the reference run all three
    SIMD           the vector widths (RNNLAB_SIMD), the host's first: every one runs on any x86 host
    CELLS          every classic cell: (class, options), ids in CELL_IDS
    TORCH_CELLS    the classic cells torch.nn has (no identity RNN, no reset-before GRU), ids in TORCH_CELL_IDS
    cell_id()      the id of a cell in CELLS
    simd_cases()   (simd, cls, kw): every cell in the host's width, the LSTM in the others
    use_backend()  a test backend or strategy name -> the layer's ``backend=`` argument (sets threads, pack size)
    serves()       whether a backend serves a batch of B rows (split: two rows at least)
    nonzero_biases()  every bias moved off zero (a zero bias hides a wrong bias gradient)
    COLS, write_long()   a long table of a user's sequences (CSV or Parquet) and the flags that read it
    process_tree(), cmdline(), reachable_from_outside()   processes from /proc: a process's descendants, its
                   command line, and the listening sockets of some that another machine could reach
    doc_script()   a script of docs/ (make_code_map, make_cli_reference, make_guide) imported as a module
    torch_twin(), torch_run()   torch.nn's layer with a layer's options and weights, and a run of it (torch is
                   imported when they are called: the reference only)
"""
from __future__ import annotations

from pathlib import Path

import os

import numpy as np
import pytest

import rnnlab


ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def _numba_ok() -> bool:
    from rnnlab.engine._kernels import available
    return available()


HAS_NUMBA = _numba_ok()
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")

REFERENCE = "numpy"
COMPILED = ["loop", "split"] if HAS_NUMBA else []
BACKENDS = [REFERENCE] + COMPILED
STRATEGIES = ["loop", "loop-packed", "split"] if HAS_NUMBA else []


def _simd():
    order = ["avx512", "avx2", "sse"]
    if not HAS_NUMBA:
        return order
    from rnnlab.engine._kernels import host
    first = host.host_variant()
    return [first] + [v for v in order if v != first]


SIMD = _simd()       # the host's width first: its kernels are the ones every other test compiles too

CELLS = [(rnnlab.RNN, {}), (rnnlab.RNN, {"nonlinearity": "relu"}), (rnnlab.RNN, {"nonlinearity": "identity"}),
         (rnnlab.LSTM, {}), (rnnlab.GRU, {}), (rnnlab.GRU, {"reset": "before"})]
CELL_IDS = ["rnn_tanh", "rnn_relu", "rnn_identity", "lstm", "gru_after", "gru_before"]
TORCH_CELLS = [(rnnlab.RNN, {}), (rnnlab.RNN, {"nonlinearity": "relu"}), (rnnlab.LSTM, {}), (rnnlab.GRU, {})]
TORCH_CELL_IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru_after"]


def cell_id(cls, kw):
    """The id of a classic cell in CELLS ("lstm", "gru_before", ...)."""
    return CELL_IDS[CELLS.index((cls, kw))]


def simd_cases(cells):
    """(simd, cls, kw) to run: every cell in the host's width (SIMD[0]); in the others, which change only the
    products (the same code for every cell), the LSTM: its x and h products summed, fused or accumulated."""
    return [(simd, cls, kw) for simd in SIMD for cls, kw in cells if simd == SIMD[0] or cls is rnnlab.LSTM]


def use_backend(name, monkeypatch):
    """-> the layer's ``backend=`` argument for a test backend or strategy name: "split" gets two threads,
    "loop-packed" is "loop" with the packed products from one row (PACK_MIN_ROWS = 1)."""
    if name == "split":
        monkeypatch.setenv("RNNLAB_NUM_THREADS", "2")
    if name == "loop-packed":
        from rnnlab.engine._kernels import loop
        monkeypatch.setattr(loop, "PACK_MIN_ROWS", 1)
        return "loop"
    return name


def serves(backend, B=2):
    """Whether ``backend`` serves a batch of B rows (split: not one row)."""
    return backend != "split" or B >= 2


def nonzero_biases(layer, rng, scale=0.5):
    """Moves every bias by uniform(-scale, scale)."""
    layer.load_state_dict({k: v + rng.uniform(-scale, scale, v.shape) if k.startswith("bias") else v
                           for k, v in layer.state_dict().items()})


# ---------------------------------------------------------------- torch, the reference only
def torch_twin(layer):
    """A torch.nn RNN/LSTM/GRU with the layer's options and a copy of its weights."""
    import torch
    cls = {rnnlab.RNN: torch.nn.RNN, rnnlab.LSTM: torch.nn.LSTM, rnnlab.GRU: torch.nn.GRU}[type(layer)]
    kw = dict(num_layers=layer.num_layers, bias=layer.bias, batch_first=layer.batch_first,
              dropout=layer.dropout, bidirectional=layer.bidirectional,
              dtype=torch.float64 if np.dtype(layer.dtype) == np.float64 else torch.float32)
    if isinstance(layer, rnnlab.RNN):
        kw["nonlinearity"] = layer.nonlinearity
    mod = cls(layer.input_size, layer.hidden_size, **kw)
    with torch.no_grad():
        for name, p in mod.named_parameters():
            p.copy_(torch.from_numpy(layer.state_dict()[name]))
    return mod


def torch_run(mod, x, hx=None, lengths=None, d_out=None, d_hn=None):
    """Forward (and backward if d_out is given) in torch; returns numpy arrays."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    x_t = torch.tensor(x, requires_grad=True)
    is_lstm = isinstance(mod, torch.nn.LSTM)
    hx_t = None
    if hx is not None:
        hx_t = tuple(torch.tensor(h, requires_grad=True) for h in (hx if is_lstm else (hx,)))
    inp = x_t
    if lengths is not None:
        inp = pack_padded_sequence(x_t, torch.as_tensor(lengths), batch_first=mod.batch_first, enforce_sorted=False)
    out, hn = mod(inp, hx_t if (hx_t is None or is_lstm) else hx_t[0])
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=mod.batch_first,
                                     total_length=x.shape[1 if mod.batch_first else 0])
    hn = hn if is_lstm else (hn,)
    res = {"output": out.detach().numpy(), "hn": [h.detach().numpy() for h in hn]}
    if d_out is not None:
        mod.zero_grad()
        loss = (out * torch.tensor(d_out)).sum()
        for h, d in zip(hn, d_hn):
            loss = loss + (h * torch.tensor(d)).sum()
        loss.backward()
        res["dx"] = x_t.grad.numpy()
        res["dhx"] = [h.grad.numpy() for h in hx_t] if hx_t is not None else None
        res["grads"] = {n: p.grad.numpy() for n, p in mod.named_parameters()}
    return res


# ---------------------------------------------------------------- a user's data files
COLS = ["--id-col", "patient", "--time-col", "visit", "--target-col", "label"]


def write_long(path, n=40, seed=0, tag=False, target="label", drop_target=False):
    """A long table (one row per patient and visit) at path (.csv or .parquet): sequences of 3..8 steps, two
    features; the label is whether the first feature's mean is positive."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        shift = 1.0 if i % 2 else -1.0
        for t in range(int(rng.integers(3, 9))):
            a = rng.normal(shift)
            r = {"patient": f"p{i:03d}", "visit": t, "hr": 70 + 10 * a, "temp": 37 + rng.normal()}
            if not drop_target:
                r[target] = ("high" if a > 0 else "low") if tag else ("sick" if shift > 0 else "well")
            rows.append(r)
    df = pd.DataFrame(rows)
    if path.suffix == ".parquet":
        df.to_parquet(path)
    else:
        df.to_csv(path, index=False)
    return df


# ---------------------------------------------------------------- processes (/proc)
LOOPBACK = {"0100007F", "00000000000000000000000001000000"}


def process_tree(root):
    """pids of root and all its descendants (from /proc)."""
    kids = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [root]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += kids.get(p, [])
    return out


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def reachable_from_outside(pids):
    """Listening sockets of pids that another machine could reach: the sockets (read in each process's own
    network namespace) of processes whose namespace has an interface other than the loopback, unless bound to
    the loopback address. -> (list of such sockets, number of listening sockets seen)."""
    seen, bad = 0, []
    for p in pids:
        try:
            inodes = {os.readlink(fd)[8:-1] for fd in Path(f"/proc/{p}/fd").iterdir()
                      if os.readlink(fd).startswith("socket:[")}
            ifaces = [line.split(":")[0].strip() for line in Path(f"/proc/{p}/net/dev").read_text().splitlines()[2:]]
            tables = [Path(f"/proc/{p}/net/{n}").read_text() for n in ("tcp", "tcp6")]
        except OSError:
            continue
        for table in tables:
            for line in table.splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and f[9] in inodes:
                    seen += 1
                    addr = f[1].split(":")[0]
                    if ifaces != ["lo"] and addr not in LOOPBACK:
                        bad.append((p, cmdline(p)[:60], addr, ifaces))
    return bad, seen


def doc_script(name: str):
    """docs/<name>.py imported as a module (the docs' generators are scripts, not package modules)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
