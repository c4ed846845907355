"""Training: the run ``config``, the ``trainer`` (``Trainer``; train, evaluate, resume), the training and
validation ``passes``, the run folder (``runs``), optimizers (``optim``) and ``metrics``."""
