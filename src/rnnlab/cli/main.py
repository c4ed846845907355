"""``rnnlab COMMAND ...``: parse (``rnnlab.cli.parser``), run the command's function, turn the user's errors into
one line.

A user's error is one of rnnlab's own (``rnnlab.errors.RnnlabError``: the option, what was expected, what was
given) or the system's about a file (``OSError``: a missing input, a full disk); each becomes
``rnnlab COMMAND: error: ...`` on stderr and exit code 2, a leading config key in the command's own words
(``lr_gamma: ...`` -> ``--lr-gamma: ...``). Running out of memory names the sizes to lower (2); Ctrl-C is 130; a
closed pipe (``rnnlab ... | head``) ends quietly (141). Anything else -- a ``TypeError`` or ``ValueError`` of a bug
included -- propagates with its traceback.
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    from rnnlab.cli.parser import build_parser
    parser = build_parser()
    parser.argv = argv
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    import warnings
    with warnings.catch_warnings():
        # NumPy's overflow warnings: the library checks every result for NaN/Inf and says so in one line
        warnings.simplefilter("ignore", RuntimeWarning)
        return _run(parser, args)


def _run(parser, args) -> int:
    from rnnlab.errors import RnnlabError
    from rnnlab.scale import distributed
    try:
        return args.func(args)
    except BrokenPipeError:                         # `rnnlab ... | head` closed the pipe: stop quietly, as cat does
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (RnnlabError, OSError) as exc:           # the user's: one line (a bug's TypeError keeps its traceback)
        print(f"rnnlab {args.command}: error: {users_words(exc, _flag_dests(parser, args))}", file=sys.stderr)
        distributed.abort(2)                        # a distributed run: end the other ranks too
        return 2
    except MemoryError as exc:
        sizes = [f"--{k.replace('_', '-')} ({getattr(args, k)})" for k in ("batch_size", "seq_len", "hidden_size",
                                                                           "num_layers") if hasattr(args, k)]
        hint = f"; lower {', '.join(sizes)}" if sizes else ""
        print(f"rnnlab {args.command}: error: out of memory ({exc or 'an allocation failed'}){hint}", file=sys.stderr)
        distributed.abort(2)
        return 2
    except KeyboardInterrupt:
        print(f"rnnlab {args.command}: interrupted", file=sys.stderr)
        return 130


def users_words(exc, dests=None) -> str:
    """One line in the command line's vocabulary: a leading config key becomes its flag (lr_gamma -> --lr-gamma)
    where the command has that flag."""
    from rnnlab.errors import RnnlabError
    from rnnlab.training.config import TrainConfig, flag
    if isinstance(exc, OSError) and not isinstance(exc, RnnlabError) and exc.filename:
        msg = f"{exc.filename}: {exc.strerror or exc}"
    else:
        msg = str(exc)
    msg = " ".join(msg.split())                     # one line, always
    key, colon, rest = msg.partition(":")
    if colon and key in TrainConfig.fields() and (dests is None or key in dests):
        return f"{flag(key)}:{rest}"
    return msg


def _flag_dests(parser, args) -> set:
    """The option names (dests) of the command that ran: its config keys that are also its flags."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    return {a.dest for a in sub._actions if a.option_strings}


if __name__ == "__main__":
    sys.exit(main())
