"""Generate text from a character-level model: temperature, top-k and an optional prompt."""
from __future__ import annotations

import numpy as np

from rnnlab.errors import ConfigError, check_float, check_int
from rnnlab.engine.grad_mode import no_grad
from rnnlab.model.heads import softmax


@no_grad()
def sample_text(model, vocab: str, length: int, prompt: str = "", temperature: float = 1.0, top_k: int = 0,
                seed=None) -> str:
    """Feed ``prompt`` through the model, then draw ``length`` characters one at a time.

    temperature divides the logits (lower = more conservative); top_k > 0 keeps only the k most likely.
    """
    check_int("length", length, 0)
    temperature = check_float("temperature", temperature, 0.0, low_open=True)
    top_k = check_int("top_k", top_k, 0)
    if model.config.input_mode == "dense" or model.config.target != "every":
        raise ConfigError("checkpoint: sampling needs a character language model (task 'chars')")
    if len(vocab) != model.config.input_size:
        raise ConfigError(f"vocab: expected {model.config.input_size} characters, got {len(vocab)}")
    stoi = {ch: i for i, ch in enumerate(vocab)}
    unknown = sorted({ch for ch in prompt if ch not in stoi})
    if unknown:
        raise ConfigError(f"prompt: characters {unknown!r} are not in the model's vocabulary "
                         f"({len(vocab)} characters: {vocab[:40]!r}...)")
    rng = np.random.default_rng(seed)
    model.eval()
    start = prompt or ("\n" if "\n" in stoi else vocab[0])
    tokens = np.array([[stoi[ch]] for ch in start], dtype=np.int64)       # (T, 1)
    logits, state = model(tokens)
    last = logits[-1, 0]
    out = []
    for _ in range(length):
        z = last.astype(np.float64) / temperature
        if 0 < top_k < z.size:
            cut = np.partition(z, -top_k)[-top_k]
            z = np.where(z < cut, -np.inf, z)
        p = softmax(z)
        idx = int(rng.choice(z.size, p=p))
        out.append(vocab[idx])
        logits, state = model(np.array([[idx]]), hx=state)
        last = logits[-1, 0]
    return prompt + "".join(out)
