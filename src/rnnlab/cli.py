"""Command-line interface: parsing and printing only; the work happens in the library."""
from __future__ import annotations

import argparse
import sys

import numpy as np


def cmd_check(args) -> int:
    """Gradient-check each layer kind with float64 central differences and print the worst error."""
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rnnlab", description="RNN, LSTM and GRU from first principles.")
    sub = p.add_subparsers(dest="command", required=True)
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
    except (RnnlabError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"rnnlab {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
