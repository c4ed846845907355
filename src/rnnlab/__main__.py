"""``python -m rnnlab``: the command line, as the ``rnnlab`` script runs it."""
import sys

from rnnlab.cli.main import main

if __name__ == "__main__":          # the lab's spawned processes import this module again as __mp_main__
    sys.exit(main())
