"""The command line's grammar: every command, its arguments and their help (``build_parser``), with one-line
argparse errors that suggest the closest option of the command that was used (``_Parser``). The training keys'
flags (every TrainConfig field) are declared by ``rnnlab.cli.commands._add_config_flags``.

Each command's ``func`` is the function of ``rnnlab.cli.commands`` (runs: train, resume, evaluate, predict, info,
sample), ``rnnlab.cli.study`` (compare, gradients, sweep), ``rnnlab.cli.interop`` (export, import) or
``rnnlab.cli.tools`` (lab, check, warmup) that calls the library and prints.
"""
from __future__ import annotations

import argparse
import sys

from rnnlab.errors import closest


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that suggest the closest valid option of the command that was used."""

    def error(self, message):
        if "unrecognized arguments:" in message:
            bad = [b.split("=")[0] for b in message.split(":", 1)[1].split() if b.startswith("-")]
            command, sub_opts = self._command_options()
            hints = []
            for b in bad:
                if b in sub_opts.get(command, ()) or command is None:
                    continue
                elsewhere = sorted(c for c, opts in sub_opts.items() if b in opts)
                hint = closest(b, [o for o in sub_opts.get(command, ()) if o != b])
                if elsewhere:
                    hint += f" ({b} is an option of: {', '.join(elsewhere)}; `rnnlab {command} --help` lists "
                    hint += f"{command}'s)"
                hints.append(hint)
            message += "".join(h for h in hints if h)
            prog = f"rnnlab {command}" if command else self.prog     # the top parser sees the command's extras
            self.exit(2, f"{prog}: error: {message}\n")
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _command_options(self):
        """(the subcommand on the command line or None, {subcommand: its option strings})."""
        sub_opts = {}
        for a in self._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    sub_opts[name] = {o for b in sp._actions for o in b.option_strings}
        argv = getattr(self, "argv", None)
        argv = sys.argv[1:] if argv is None else argv
        command = next((w for w in argv if w in sub_opts), None) if sub_opts else None
        return command, sub_opts


def build_parser() -> argparse.ArgumentParser:
    from rnnlab.cli.commands import (
        _add_config_flags, cmd_evaluate, cmd_info, cmd_predict, cmd_resume, cmd_sample, cmd_train,
    )
    from rnnlab.cli.interop import cmd_export, cmd_import
    from rnnlab.cli.study import cmd_compare, cmd_gradients, cmd_sweep
    from rnnlab.cli.tools import cmd_check, cmd_lab, cmd_warmup
    from rnnlab.engine.cells import CELLS
    p = _Parser(prog="rnnlab", description="RNN, LSTM and GRU from first principles.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model on a task", description="Train a model. Every option can come "
                       "from a TOML file (--config) or a flag; flags win.")
    t.add_argument("--config", help="TOML file with options (keys as the flags, with underscores)")
    t.add_argument("--json", help="also write the final metrics to this JSON file")
    _add_config_flags(t)
    t.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("resume", help="continue a run from its last checkpoint")
    r.add_argument("run_dir", help="the run folder (its checkpoint.safetensors and config.toml)")
    r.add_argument("--steps", type=int, default=None, help="new total number of steps (default: the run's)")
    r.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    r.set_defaults(func=cmd_resume)

    sw = sub.add_parser("sweep", help="a grid or random sweep over training keys and seeds, on Ray Tune",
                        description="Run the trials of a sweep file on Ray Tune (an embedded local Ray unless "
                        "--address names a cluster) and summarise them over seeds. See rnnlab.scale.sweep for the file.")
    sw.add_argument("config", nargs="?", help="TOML file: the base training keys and a [sweep] table")
    sw.add_argument("--out", help="the sweep's folder (trials/, summary.md, report.html ...)")
    sw.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR: unfinished trials only")
    sw.add_argument("--address", help="an existing Ray cluster (host:port); default: a local Ray on this machine")
    sw.add_argument("--workers", type=int, help="trials at once on the local Ray (default: the CPUs)")
    sw.set_defaults(func=cmd_sweep)

    e = sub.add_parser("evaluate", help="validation metrics of a trained model")
    e.add_argument("checkpoint", help="run folder, model.safetensors or checkpoint.safetensors")
    e.add_argument("--data", help="score a held-out file (same layout as the run's --data) instead of the "
                   "run's validation data")
    e.add_argument("--json", help="write the metrics to this JSON file")
    e.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="predictions of a run trained on --data for a new file",
                        description="Predict for every sequence (every step when tagging) of a file in the run's "
                        "data layout; the target column may be absent. Features are standardised and labels "
                        "mapped with the run's stored statistics.")
    pr.add_argument("checkpoint", help="run folder, model.safetensors or checkpoint.safetensors")
    pr.add_argument("--data", required=True, help=".npz, .csv or .parquet file of sequences; for a forecaster, a "
                    "table of each series' recent values (and the horizon's rows of known future covariates)")
    pr.add_argument("--out", required=True, help="predictions file: .csv or .parquet (written atomically)")
    pr.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    pr.add_argument("--each-step", action="store_true", help="a row per step: the prediction after each step, the "
                    "sequences fed to an rnnlab.Stream as a deployed model reads them (a tagger's rows already are)")
    pr.add_argument("--chunk", type=int, default=None, help="--each-step: steps fed per call (default 1)")
    pr.set_defaults(func=cmd_predict)

    inf = sub.add_parser("info", help="the model card of a run: model, data and its hash, metrics beside the "
                         "baseline, how to load it in rnnlab, onnxruntime and torch")
    inf.add_argument("run", help="run folder (or its model.safetensors)")
    inf.add_argument("--json", help="also write the card as JSON to this file")
    inf.add_argument("--force", action="store_true", help="replace an existing --json file (never an input)")
    inf.set_defaults(func=cmd_info)

    s = sub.add_parser("sample", help="generate text from a character model")
    s.add_argument("checkpoint", help="run folder, model.safetensors or checkpoint.safetensors")
    s.add_argument("--length", type=int, default=300, help="characters to generate (default: 300)")
    s.add_argument("--prompt", default="", help="text to start from; every character must be in the model's "
                   "vocabulary (default: none)")
    s.add_argument("--temperature", type=float, default=0.8, help="divides the logits: below 1 more likely "
                   "characters, above 1 more varied text (default: 0.8)")
    s.add_argument("--top-k", type=int, default=0, help="draw among the k likeliest characters only (default: 0, "
                   "all)")
    s.add_argument("--seed", type=int, default=None, help="the draws' seed (default: a fresh one each time)")
    s.set_defaults(func=cmd_sample)

    cp = sub.add_parser("compare", help="train RNN, LSTM and GRU side by side; table, figures, report.html",
                        description="Train several models on one task with the same data and seed, at matched "
                        "parameter counts (the LSTM at --hidden-size sets the count), and report metrics, speed "
                        "and gradient flow.")
    cp.add_argument("--config", help="TOML file: training keys at the top, compare's own in a [compare] table "
                    "(entries, match, params, seeds, workers, runner, threshold, forget_bias_ablation, report, "
                    "diagnostics); flags override it")
    cp.add_argument("--models", default=None, help="comma-separated entries: a cell with +key=value settings of its "
                    "own model or training, e.g. gru+reset=before,rnn+recurrent_init=orthogonal,lstm+lr=0.01 "
                    "(+label=NAME names one; default: rnn,lstm,gru)")
    cp.add_argument("--match", choices=("params", "hidden"), default=None,
                    help="match parameter counts (default) or use the same hidden size")
    cp.add_argument("--params", type=int, default=None, help="target parameter count (default: the LSTM's)")
    cp.add_argument("--forget-bias-ablation", action=argparse.BooleanOptionalAction, default=None,
                    help="also train the LSTM with forget bias 0 and 1")
    cp.add_argument("--threshold", default=None, metavar="METRIC=VALUE",
                    help="what counts as solved, e.g. mse=0.01 (a bare VALUE: of the task's default metric)")
    cp.add_argument("--report", default=None, help="folder for figures, summary.md, report.html (default: "
                    "runs/compare)")
    cp.add_argument("--seeds", type=int, default=None, help="train every entry with this many seeds and report "
                    "mean, sd and 95%% interval")
    cp.add_argument("--workers", type=int, default=None, help="--seeds: processes at once (pool) or Ray's CPUs")
    cp.add_argument("--runner", choices=("serial", "pool", "ray"), default=None, help="--seeds: one after another "
                    "(default), a local process pool (the default with --workers N > 1), or Ray Tune (the sweep "
                    "runner; needs rnnlab[sweep])")
    cp.add_argument("--json", help="also write the numbers to this JSON file")
    _add_config_flags(cp)
    cp.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    cp.set_defaults(func=cmd_compare)

    g = sub.add_parser("gradients", help="gradient-flow diagnostics of a model (fresh or a checkpoint) and sweeps")
    g.add_argument("checkpoint", nargs="?", help="run folder or checkpoint (default: a fresh model from the flags)")
    g.add_argument("--config", help="TOML file with options for a fresh model")
    g.add_argument("--sweep", help="spectral-radius sweep LOW:HIGH:COUNT, e.g. 0.5:1.5:11")
    g.add_argument("--sweep-cells", default=None, help="the sweep's cells (default: rnn-tanh,rnn-linear,lstm,gru): any cell "
                   "with options, as compare's entries (e.g. gru+reset=before,indrnn,lru), or rnn-tanh, rnn-linear")
    g.add_argument("--sweep-len", type=int, default=100, help="sequence length of the sweep")
    g.add_argument("--sweep-hidden", type=int, default=64, help="hidden size of the sweep's layers")
    g.add_argument("--at-step", type=int, default=None, help="also print the norms at this time step")
    g.add_argument("--report", default="runs/gradients", help="folder for figures and report.html")
    g.add_argument("--json", help="write the numbers to this JSON file")
    _add_config_flags(g)
    g.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    g.set_defaults(func=cmd_gradients)

    ex = sub.add_parser("export", help="export a trained model or a layer file to ONNX, torch or Keras weights")
    ex.add_argument("checkpoint", help="run folder, model.safetensors, or a layer file from `rnnlab import`")
    ex.add_argument("--format", choices=("onnx", "torch", "keras"), default="onnx", help="onnx: a graph that "
                    "onnxruntime runs; torch: a state_dict as safetensors; keras: Keras 3 weights (default: onnx)")
    ex.add_argument("--out", required=True, help="the file to write (refused if it exists, unless --force)")
    ex.add_argument("--lengths", action="store_true", help="ONNX: add a 'lengths' input for ragged batches")
    ex.add_argument("--state", action="store_true",
                    help="ONNX, a model: state inputs h0 (c0) and outputs h_n (c_n), to run a stream chunk by chunk")
    ex.add_argument("--batch-first", action="store_true", help="ONNX, a model: inputs (B, T, F) instead of (T, B, F)")
    ex.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    ex.set_defaults(func=cmd_export)

    im = sub.add_parser("import", help="read an ONNX file, torch state_dict or Keras weights into an rnnlab layer file")
    im.add_argument("file", help="an .onnx file, a torch state_dict saved as safetensors, or Keras weights")
    im.add_argument("--format", choices=("onnx", "torch", "keras"), default="onnx", help="what the file holds "
                    "(default: onnx)")
    im.add_argument("--cell", choices=tuple(CELLS), help="torch and keras: which cell the weights are")
    im.add_argument("--batch-first", action="store_true", help="the layer takes (B, T, F) instead of (T, B, F)")
    im.add_argument("--out", required=True, help="layer file to write (.safetensors)")
    im.add_argument("--force", action="store_true", help="replace an existing output file (never an input)")
    im.set_defaults(func=cmd_import)

    lb = sub.add_parser("lab", help="the live gradient lab: a local page where a model trains and its gradients are "
                        "measured as you watch", description="Serve the lab on 127.0.0.1 (loopback only) and open it "
                        "in the browser. Needs the lab extra: pip install 'rnnlab[lab]'.")
    lb.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one)")
    lb.add_argument("--no-browser", action="store_true", help="print the address only")
    lb.add_argument("--runs", default="runs/lab", help="folder for the lab's run folders (default: runs/lab)")
    lb.set_defaults(func=cmd_lab)

    c = sub.add_parser("check", help="gradient-check every layer kind (BPTT vs finite differences)")
    c.add_argument("--seq-len", type=int, default=6, help="steps of the checked sequences (default: 6)")
    c.add_argument("--num-layers", type=int, default=2, help="stacked layers of each checked kind (default: 2)")
    c.add_argument("--seed", type=int, default=0, help="the weights' and inputs' seed (default: 0)")
    c.set_defaults(func=cmd_check)

    w = sub.add_parser("warmup", help="compile the kernels ahead (once per machine; later processes load them)")
    w.add_argument("--dtype", nargs="+", default=["float32"], choices=("float32", "float64"), help="the "
                   "precisions to compile for (default: float32)")
    from rnnlab.engine.warmup import CELL_CONFIGS
    w.add_argument("--cell", nargs="+", choices=tuple(CELL_CONFIGS), help="only these (default: every cell)")
    w.add_argument("--inference", action="store_true",
                   help="the inference forwards only (a serving process runs no backward)")
    w.add_argument("--quiet", action="store_true", help="print only the last line: the time and the folder the kernels went to")
    w.set_defaults(func=cmd_warmup)
    return p

