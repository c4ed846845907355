"""What every task provides: batches, validation data, the model's input/output shape and its metrics."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Batch:
    inputs: np.ndarray            # tokens (T, B) int, or features (T, B, I) float -- time-major
    targets: np.ndarray           # (T, B) / (B,) class indices, or (T, B, K) / (B, K) values
    lengths: np.ndarray | None = None
    reset: bool = False           # stateful tasks: start this batch from a zero state
    weights: np.ndarray | None = None     # (B,) each sequence's weight in the loss (estimators' sample_weight)


class Task:
    """A task; subclasses set the class attributes and implement ``train_batch`` and ``val_batches``."""

    name = ""
    input_mode = "dense"          # dense | onehot | embedding
    prediction = "softmax"        # softmax | sigmoid | identity
    target = "every"              # every | last
    metrics = ("loss",)
    stateful = False              # True: consecutive batches continue the same streams (TBPTT)
    input_size = 1
    output_size = 1

    def train_batch(self, rng: np.random.Generator, batch_size: int, step: int) -> Batch:
        raise NotImplementedError

    def val_batches(self) -> list[Batch]:
        raise NotImplementedError

    def baseline(self) -> tuple[str, float] | None:
        """A reference value (name, number) printed beside the result, e.g. a memoryless baseline."""
        return None

    def describe(self) -> str:
        return self.name

    def extra_metrics(self, loss: float, logits, batch) -> dict:
        return {}

    def info(self) -> dict:
        """Facts stored with a checkpoint so `evaluate` and `sample` can rebuild the task's view of data."""
        return {}
