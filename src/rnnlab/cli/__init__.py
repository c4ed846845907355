"""The command line, ``rnnlab COMMAND ...``: parsing and printing only; the work happens in the library.

    rnnlab.cli.main       main(argv): parse, run, rnnlab's errors as one line (a bug keeps its traceback)
    rnnlab.cli.parser     every command's arguments and help
    rnnlab.cli.commands   runs: train, resume, evaluate, predict, info, sample (and the training keys' flags)
    rnnlab.cli.study      studies: compare, gradients, sweep
    rnnlab.cli.interop    export, import
    rnnlab.cli.tools      lab, check, warmup
    rnnlab.cli.common     what they share (--json, inputs that outputs may not overwrite, a run's summary)

Each command's function hands its flags to the library (``rnnlab.study.runs``, ``rnnlab.study.comparison``,
``rnnlab.study.gradients``, ``rnnlab.scale.sweep``, ``rnnlab.interop``, ...) and prints what comes back.
"""
