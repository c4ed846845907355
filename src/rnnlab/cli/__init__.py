"""The command line: ``rnnlab COMMAND ...`` (``commands``)."""
