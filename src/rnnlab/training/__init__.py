"""Training: the run ``config``, the public ``Trainer`` (``trainer``: train, evaluate, resume; its passes in
``passes``, its run folder in ``runs``), optimizers and schedules (``optim``) and ``metrics``."""
