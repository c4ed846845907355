"""The engine, the room a learner opens first: the layers and everything under them.

``layers`` (the PyTorch-shaped face: ``rnnlab.RNN`` ... ``rnnlab.LRU``) -> ``dispatch`` (the one stack over layers x
directions, and the backend that serves a call) -> ``_reference`` (backend "numpy": the time loop over a cell's
NumPy step, in ``cells/``) or ``_kernels/`` (the compiled loops over each cell's row kernels). ``registry`` says
what a cell is; ``scan`` holds the diagonal cells' parallel scans; ``options`` declares every layer option once;
``grad_mode``, ``gradcheck`` and ``warmup`` are the engine's public tools. Nothing here imports from outside the
engine but ``rnnlab.errors``.
"""
