"""A sequence model around the engine: input and output layers (``heads``), ``losses``, the stacked model
(``sequence_model``), safe ``checkpoint`` files, the model ``card``, text ``sample``-ing and the ``stream``
(a layer or a model fed a step or a chunk at a time)."""
