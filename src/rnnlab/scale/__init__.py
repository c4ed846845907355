"""Beyond one process (the optional extras' room): Ray Tune sweeps (``sweep``), MPI data parallelism
(``distributed``), experiment ``tracking`` and a loopback-only network namespace (``netns``)."""
