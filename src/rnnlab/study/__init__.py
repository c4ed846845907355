"""The researcher's room: gradient-flow ``diagnostics``, controlled comparisons (``compare``), summaries over
``seeds`` and the ``report`` (figures, Markdown, HTML); the commands' studies as library calls: ``gradients``
(``rnnlab gradients``), ``comparison`` (``rnnlab compare``) and ``runs`` (a trained run evaluated or asked for
predictions: ``rnnlab evaluate``, ``rnnlab predict``)."""
