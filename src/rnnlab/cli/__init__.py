"""The command line: ``rnnlab COMMAND ...`` (``rnnlab.cli.main.main``; the modules: ``rnnlab.cli.commands``)."""
