"""Helpers that run the same computation in torch.nn, for parity tests (torch is the reference only)."""
import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnlab

TORCH_CLS = {rnnlab.RNN: torch.nn.RNN, rnnlab.LSTM: torch.nn.LSTM, rnnlab.GRU: torch.nn.GRU}


def torch_twin(layer):
    """A torch module with the layer's options and a copy of its weights."""
    kw = dict(num_layers=layer.num_layers, bias=layer.bias, batch_first=layer.batch_first,
              dropout=layer.dropout, bidirectional=layer.bidirectional,
              dtype=torch.float64 if np.dtype(layer.dtype) == np.float64 else torch.float32)
    if isinstance(layer, rnnlab.RNN):
        kw["nonlinearity"] = layer.nonlinearity
    mod = TORCH_CLS[type(layer)](layer.input_size, layer.hidden_size, **kw)
    with torch.no_grad():
        for name, p in mod.named_parameters():
            p.copy_(torch.from_numpy(layer.state_dict()[name]))
    return mod


def torch_run(mod, x, hx=None, lengths=None, d_out=None, d_hn=None):
    """Forward (and backward if d_out is given) in torch; returns numpy arrays."""
    x_t = torch.tensor(x, requires_grad=True)
    is_lstm = isinstance(mod, torch.nn.LSTM)
    hx_t = None
    if hx is not None:
        hx_t = tuple(torch.tensor(h, requires_grad=True) for h in (hx if is_lstm else (hx,)))
    inp = x_t
    if lengths is not None:
        inp = pack_padded_sequence(x_t, torch.as_tensor(lengths), batch_first=mod.batch_first, enforce_sorted=False)
    out, hn = mod(inp, hx_t if (hx_t is None or is_lstm) else hx_t[0])
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=mod.batch_first, total_length=x.shape[1 if mod.batch_first else 0])
    hn = hn if is_lstm else (hn,)
    res = {"output": out.detach().numpy(), "hn": [h.detach().numpy() for h in hn]}
    if d_out is not None:
        mod.zero_grad()
        loss = (out * torch.tensor(d_out)).sum()
        for h, d in zip(hn, d_hn):
            loss = loss + (h * torch.tensor(d)).sum()
        loss.backward()
        res["dx"] = x_t.grad.numpy()
        res["dhx"] = [h.grad.numpy() for h in hx_t] if hx_t is not None else None
        res["grads"] = {n: p.grad.numpy() for n, p in mod.named_parameters()}
    return res
