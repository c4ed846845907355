"""Command-line interface: parsing and printing only; the work happens in the library.

    rnnlab train    [--config FILE] [--task ...] [--model ...] ...   train a model (flags override the file)
    rnnlab resume   DIR                                              continue a killed run from its checkpoint
    rnnlab evaluate RUN_OR_CHECKPOINT                                validation metrics of a trained model
    rnnlab sample   RUN_OR_CHECKPOINT [--length N] [--prompt S]       text from a character model
    rnnlab check                                                     gradient-check every layer kind
"""
from __future__ import annotations

import argparse
import json
import sys
import typing

import numpy as np

from .errors import closest


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that suggest the closest valid option."""

    def error(self, message):
        if "unrecognized arguments:" in message:
            bad = message.split(":", 1)[1].split()
            opts = [o for a in self._actions for o in a.option_strings]
            for a in self._actions:                       # options of the subcommands too
                if isinstance(a, argparse._SubParsersAction):
                    opts += [o for sp in a.choices.values() for b in sp._actions for o in b.option_strings]
            hints = [closest(b.split("=")[0], opts) for b in bad if b.startswith("-")]
            message += "".join(h for h in hints if h)
        self.exit(2, f"{self.prog}: error: {message}\n")


# ------------------------------------------------------------------------------ gradient check
def cmd_check(args) -> int:
    from . import GRU, LSTM, RNN
    from .gradcheck import check_layer

    rng = np.random.default_rng(args.seed)
    kinds = [("rnn (tanh)", RNN, {}), ("rnn (relu)", RNN, {"nonlinearity": "relu"}), ("lstm", LSTM, {}),
             ("gru (reset after)", GRU, {}), ("gru (reset before)", GRU, {"reset": "before"})]
    T, B, I, H = args.seq_len, 3, 4, 5
    print(f"gradient check: float64 central differences vs hand-derived BPTT "
          f"(T={T}, B={B}, I={I}, H={H}, {args.num_layers} layers, bidirectional, ragged lengths)")
    worst = 0.0
    for name, cls, kw in kinds:
        layer = cls(I, H, args.num_layers, bidirectional=True, dtype="float64", seed=args.seed, **kw)
        x = rng.standard_normal((T, B, I))
        lengths = np.array([T, max(1, T // 2), max(1, T - 1)])
        errors = check_layer(layer, x, lengths=lengths, seed=args.seed)
        top = max(errors, key=errors.get)
        worst = max(worst, errors[top])
        print(f"  {name:20s} {layer.num_parameters():5d} params  max relative error {errors[top]:.2e} ({top})")
    ok = worst < 1e-6
    print(f"{'PASS' if ok else 'FAIL'}: worst relative error {worst:.2e} (tolerance 1e-6)")
    return 0 if ok else 1


# ------------------------------------------------------------------------------ training
def _add_config_flags(p):
    from .config import TrainConfig
    hints = typing.get_type_hints(TrainConfig)
    for name, f in TrainConfig.fields().items():
        flag = "--" + name.replace("_", "-")
        typ = hints[name]
        if typ is bool:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        else:
            conv = float if typ in (float, typing.Optional[float]) else typ
            p.add_argument(flag, dest=name, type=conv, default=argparse.SUPPRESS,
                           metavar=name.upper(), help=f"default: {f.default!r}")


def _print_summary(r, file=None):
    cfg = r.config
    lines = [f"== {cfg.task} / {cfg.model}  (hidden {cfg.hidden_size} x {cfg.num_layers} layers, "
             f"{r.model.num_parameters()} parameters)",
             f"   {r.task.describe()}"]
    rate = r.steps_run / r.seconds if r.seconds > 0 else float("nan")
    lines.append(f"   steps {cfg.steps} ({r.steps_run} this run) in {r.seconds:.1f} s  ({rate:.1f} steps/s)"
                 f";  clipped {r.clipped_steps}, skipped {r.skipped_steps}")
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in r.final.items())
    lines.append(f"   validation: {metrics}")
    if r.baseline:
        lines.append(f"   baseline:   {r.baseline[0]} {r.baseline[1]:.4f}")
    for w in r.warnings:
        lines.append(f"   warning: {w}")
    if r.out is not None:
        lines.append(f"   run folder: {r.out}  (config.toml, metrics.jsonl, checkpoint.safetensors, model.safetensors)")
    print("\n".join(lines), file=file or sys.stdout)


def cmd_train(args) -> int:
    from .config import resolve
    from .train import train
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "func", "config", "json")}
    cfg = resolve(args.config, overrides)
    r = train(cfg, progress=not cfg.quiet)
    _print_summary(r)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"final": r.final, "baseline": r.baseline, "seconds": r.seconds,
                       "parameters": r.model.num_parameters(), "config": cfg.to_dict()}, fh, indent=2)
    return 0


def cmd_resume(args) -> int:
    from .train import resume
    r = resume(args.run_dir, progress=not args.quiet, steps=args.steps)
    _print_summary(r)
    return 0


def cmd_evaluate(args) -> int:
    from .config import TrainConfig
    from .tasks import build_task
    from .train import evaluate, load_model
    model, meta = load_model(args.checkpoint)
    cfg = TrainConfig.from_dict(meta["config"])
    task = build_task(cfg, vocab=meta.get("task_info", {}).get("vocab"))
    metrics = evaluate(model, task)
    print(f"{cfg.task} / {cfg.model}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    b = task.baseline()
    if b:
        print(f"baseline: {b[0]} {b[1]:.4f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(metrics, fh, indent=2)
    return 0


def cmd_sample(args) -> int:
    from .errors import ConfigError
    from .sample import sample_text
    from .train import load_model
    model, meta = load_model(args.checkpoint)
    vocab = meta.get("task_info", {}).get("vocab")
    if vocab is None:
        raise ConfigError(f"checkpoint: {args.checkpoint} is not a character language model (no vocabulary stored)")
    text = sample_text(model, vocab, args.length, args.prompt, args.temperature, args.top_k, args.seed)
    sys.stdout.write(text + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rnnlab", description="RNN, LSTM and GRU from first principles.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model on a task", description="Train a model. Every option can come "
                       "from a TOML file (--config) or a flag; flags win.")
    t.add_argument("--config", help="TOML file with options (keys as the flags, with underscores)")
    t.add_argument("--json", help="also write the final metrics to this JSON file")
    _add_config_flags(t)
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("resume", help="continue a run from its last checkpoint")
    r.add_argument("run_dir")
    r.add_argument("--steps", type=int, default=None, help="new total number of steps (default: the run's)")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_resume)

    e = sub.add_parser("evaluate", help="validation metrics of a trained model")
    e.add_argument("checkpoint", help="run folder, model.safetensors or checkpoint.safetensors")
    e.add_argument("--json", help="write the metrics to this JSON file")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sample", help="generate text from a character model")
    s.add_argument("checkpoint", help="run folder, model.safetensors or checkpoint.safetensors")
    s.add_argument("--length", type=int, default=300)
    s.add_argument("--prompt", default="")
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--seed", type=int, default=None)
    s.set_defaults(func=cmd_sample)

    c = sub.add_parser("check", help="gradient-check every layer kind (BPTT vs finite differences)")
    c.add_argument("--seq-len", type=int, default=6)
    c.add_argument("--num-layers", type=int, default=2)
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=cmd_check)
    return p


def main(argv=None) -> int:
    from .errors import RnnlabError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RnnlabError, ValueError, TypeError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"rnnlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
