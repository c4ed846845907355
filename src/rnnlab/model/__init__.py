"""A sequence model around the engine: input and output layers (``heads``), ``losses``, the stacked model
(``sequence_model``), safe ``checkpoint`` files, the model ``card`` and text ``sample``-ing."""
