"""The researcher's room: gradient-flow ``diagnostics``, controlled comparisons (``compare``), summaries over
``seeds`` and the ``report`` (figures, Markdown, HTML)."""
