"""The standard long-memory benchmarks, generated on the fly.

adding (Hochreiter & Schmidhuber 1997; Le et al. 2015): input (T, B, 2): channel 0 uniform in [0, 1],
channel 1 a marker, 1 at exactly two random steps, else 0. Target (B, 1) at the last step: the sum of the
two marked values. MSE; always predicting 1 gives MSE 1/6 = 0.167.

copy (Arjovsky et al. 2016): alphabet {0 blank, 1..8 symbols, 9 delimiter}. Input, length T + 20: 10 random
symbols, T - 1 blanks, the delimiter, 10 blanks. Target: T + 10 blanks, then the 10 symbols. Cross-entropy at
every step; a memoryless model that outputs blanks then guesses scores 10 ln 8 / (T + 20).

selective_copy (Gu and Dao 2023, "Mamba", section 4.1.1): alphabet {0 noise, 1..8 symbols, 9 delimiter}. Input,
length T + K + 1: K random symbols at K random distinct positions among T noise steps, the delimiter, K noise
steps. Target: noise everywhere but the last K steps, which hold the K symbols in the order they appeared. The
positions differ from sequence to sequence, so the model must select what to keep by content, which a time-
invariant recurrence (the LRU's) cannot. Cross-entropy at every step; ``recall_accuracy`` over the K recalled
symbols (the number the papers report); a memoryless model scores K ln 8 / (T + K + 1).
"""
from __future__ import annotations

import math

import numpy as np

from rnnlab.errors import check_int
from rnnlab.tasks.base import Batch, Task


class GeneratedTask(Task):
    """A task whose batches come from ``generate(rng, B)``; validation is one fixed generated batch."""

    _val: Batch

    def generate(self, rng, B) -> Batch:
        raise NotImplementedError

    def train_batch(self, rng, batch_size, step):
        return self.generate(rng, batch_size)

    def val_batches(self):
        return [self._val]


class Adding(GeneratedTask):
    name = "adding"
    input_mode = "dense"
    prediction = "identity"
    target = "last"
    metrics = ("loss", "mse")
    input_size = 2
    output_size = 1

    def __init__(self, seq_len: int, val_size: int = 1000, seed: int = 0):
        self.T = check_int("seq_len", seq_len, 2)
        self._val = self.generate(np.random.default_rng([seed, 1]), val_size)

    def generate(self, rng, B) -> Batch:
        T = self.T
        x = np.zeros((T, B, 2))
        x[:, :, 0] = rng.uniform(0, 1, (T, B))
        first = rng.integers(0, T // 2, B)                       # one marker in each half, as usual
        second = rng.integers(T // 2, T, B)
        cols = np.arange(B)
        x[first, cols, 1] = 1.0
        x[second, cols, 1] = 1.0
        y = (x[first, cols, 0] + x[second, cols, 0])[:, None]    # (B, 1)
        return Batch(x, y)

    def baseline(self):
        return ("always-predict-1 MSE", 1.0 / 6.0)

    def describe(self):
        return f"adding: T={self.T}, 2 input channels, target at the last step"

    def extra_metrics(self, loss, logits, batch):
        return {"mse": loss}


class Copy(GeneratedTask):
    name = "copy"
    input_mode = "onehot"
    prediction = "softmax"
    target = "every"
    metrics = ("loss", "accuracy", "recall_accuracy")
    input_size = 10
    output_size = 10
    n_symbols = 10
    K = 10                        # symbols recalled at the end (recall_accuracy)

    def __init__(self, seq_len: int, val_size: int = 500, seed: int = 0):
        self.T = check_int("seq_len", seq_len, 1)
        self._val = self.generate(np.random.default_rng([seed, 2]), val_size)

    def generate(self, rng, B) -> Batch:
        T, S = self.T, self.n_symbols
        L = T + 2 * S
        x = np.zeros((L, B), dtype=np.int64)
        y = np.zeros((L, B), dtype=np.int64)
        sym = rng.integers(1, 9, (S, B))
        x[:S] = sym
        x[S + T - 1] = 9                                           # delimiter
        y[T + S:] = sym
        return Batch(x, y)

    def baseline(self):
        return ("memoryless cross-entropy", 10 * math.log(8) / (self.T + 20))

    def describe(self):
        return f"copy: recall 10 symbols after T={self.T} blanks (sequence length {self.T + 20})"

    def extra_metrics(self, loss, logits, batch):
        pred = logits.argmax(-1)
        K = self.K
        return {"accuracy": float((pred == batch.targets).mean()),
                "recall_accuracy": float((pred[-K:] == batch.targets[-K:]).mean())}


class SelectiveCopy(Copy):
    """Copy's alphabet, heads and metrics; the symbols scattered instead of leading."""

    name = "selective_copy"

    def __init__(self, seq_len: int, tokens: int = 8, val_size: int = 500, seed: int = 0):
        self.T = check_int("seq_len", seq_len, 1)
        self.K = check_int("tokens", tokens, 1, self.T)
        self._val = self.generate(np.random.default_rng([seed, 4]), val_size)

    def generate(self, rng, B) -> Batch:
        T, K = self.T, self.K
        L = T + K + 1
        x = np.zeros((L, B), dtype=np.int64)
        y = np.zeros((L, B), dtype=np.int64)
        pos = np.sort(rng.random((T, B)).argsort(axis=0)[:K], axis=0)    # K distinct positions per column, in order
        sym = rng.integers(1, 9, (K, B))
        cols = np.arange(B)[None, :]
        x[pos, cols] = sym
        x[T] = 9                                                         # delimiter
        y[T + 1:] = sym
        return Batch(x, y)

    def baseline(self):
        return ("memoryless cross-entropy", self.K * math.log(8) / (self.T + self.K + 1))

    def describe(self):
        return (f"selective_copy: recall {self.K} symbols scattered among T={self.T} noise steps "
                f"(sequence length {self.T + self.K + 1})")
