"""Training: the run ``config``, the ``trainer`` (train, evaluate, resume), optimizers (``optim``) and ``metrics``."""
