"""The layer options, declared once: the run configuration (``TrainConfig``), the model's (``ModelConfig``), the
estimators (``layer_options=``), the command line's flags, compare entries and sweeps all read this class.

An option is a field of ``LayerOptions`` with its default, its one-line help, and the cells that own it (empty:
every cell). An option of one cell given to another is refused, not ignored (``check_cell``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from rnnlab.errors import ConfigError, check_choice, check_float, check_int, closest

NONLINEARITIES = ("tanh", "relu", "identity")
RESETS = ("after", "before")
RECURRENT_INITS = ("uniform", "orthogonal")
REGULARISERS = ("input_dropout", "recurrent_dropout", "zoneout", "zoneout_cell")     # act in training only
_CELL_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN", "indrnn": "IndRNN"}


def owner_names(cells) -> str:
    """The cells that own an option, as a sentence names them: ``LSTM and the GRU``."""
    return " and the ".join(_CELL_NAMES.get(c, c) for c in cells)


def _option(default, help: str, cells: tuple = (), layer: bool = True):
    """A field of LayerOptions: ``cells`` own it (empty: every cell); ``layer``: a keyword of the layer class
    (otherwise the model applies it after building the layer)."""
    return field(default=default, metadata={"help": help, "cells": cells, "layer": layer, "group": "layer options"})


@dataclass
class LayerOptions:
    input_dropout: float = _option(0.0, "variational dropout: one mask per sequence on each layer's input x_t")
    recurrent_dropout: float = _option(0.0, "variational dropout: one mask per sequence on the h_{t-1} of the "
                                            "recurrent product")
    zoneout: float = _option(0.0, "per unit and step, keep h_{t-1} with this probability (Krueger et al. 2017)")
    zoneout_cell: float = _option(0.0, "zoneout of the LSTM's cell state c", ("lstm",))
    nonlinearity: str = _option("tanh", "the RNN's activation: tanh | relu | identity", ("rnn",))
    reset: str = _option("after", "where the GRU's reset gate acts: after (torch, cuDNN) | before (Cho et al. "
                                  "2014) the recurrent product", ("gru",))
    forget_bias: float | None = _option(None, "the LSTM's forget-gate bias at initialisation (none: torch's "
                                              "uniform init)", ("lstm",))
    update_bias: float | None = _option(None, "the GRU's update-gate bias at initialisation (> 0: the units start "
                                              "by keeping h)", ("gru",))
    peephole: bool = _option(False, "the LSTM's cell-to-gate connections (Gers and Schmidhuber 2000)", ("lstm",))
    proj_size: int = _option(0, "project the LSTM's h to this size (torch's proj_size; 0 = off)", ("lstm",))
    layer_norm: bool = _option(False, "layer-normalised projections (and c), Ba et al. 2016", ("lstm", "gru"))
    recurrent_max: float = _option(0.0, "the IndRNN's bound on |u| after each update (0: 2^(1/seq_len) when "
                                        "rnnlab trains it, Li et al. 2018; no bound for a model built directly)",
                                   ("indrnn",))
    recurrent_init: str = _option("uniform", "W_hh's initialisation: uniform (torch's) | orthogonal")
    recurrent_radius: float = _option(0.0, "scale every W_hh gate block to this spectral radius at "
                                           "initialisation (0 = off)", layer=False)

    # ----------------------------------------------------------------------------- reading the declaration
    @classmethod
    def names(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(LayerOptions))

    @classmethod
    def layer_names(cls) -> tuple:
        """The options that are keywords of the layer classes (``recurrent_radius`` is the model's)."""
        return tuple(f.name for f in dataclasses.fields(LayerOptions) if f.metadata["layer"])

    @classmethod
    def owners(cls) -> dict:
        """{option: the cells that own it} for the options of some cells only."""
        return {f.name: f.metadata["cells"] for f in dataclasses.fields(LayerOptions) if f.metadata["cells"]}

    @classmethod
    def help(cls, name: str) -> str:
        return {f.name: f.metadata["help"] for f in dataclasses.fields(LayerOptions)}[name]

    @classmethod
    def defaults(cls) -> dict:
        return {f.name: f.default for f in dataclasses.fields(LayerOptions)}

    @classmethod
    def from_mapping(cls, values: dict, where: str = "layer_options") -> "LayerOptions":
        """Options from a dict (an estimator's ``layer_options``): unknown keys refused, naming the valid ones."""
        if values is None:
            return cls()
        if isinstance(values, LayerOptions):
            return cls(**values.options())
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: expected a dict of layer options, got {type(values).__name__}")
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ConfigError(f"{where}: unknown option {unknown[0]!r}; expected some of {list(cls.names())}"
                              f"{closest(unknown[0], cls.names())}")
        return cls(**values)

    def options(self) -> dict:
        """This object's layer options alone (a TrainConfig or ModelConfig has other fields too)."""
        return {name: getattr(self, name) for name in LayerOptions.names()}

    # ----------------------------------------------------------------------------- checks
    def check_options(self) -> "LayerOptions":
        """Each option's own range (the cell is checked by ``check_cell``)."""
        for k in REGULARISERS:
            check_float(k, getattr(self, k), 0.0, 1.0, high_open=True)
        check_choice("nonlinearity", self.nonlinearity, NONLINEARITIES)
        check_choice("reset", self.reset, RESETS)
        check_choice("recurrent_init", self.recurrent_init, RECURRENT_INITS)
        for k in ("forget_bias", "update_bias"):
            v = getattr(self, k)
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
                raise ConfigError(f"{k}: expected a finite number, got {v!r}")
        check_int("proj_size", self.proj_size, 0)
        check_float("recurrent_max", self.recurrent_max, 0.0)
        check_float("recurrent_radius", self.recurrent_radius, 0.0)
        return self

    def set_options(self) -> list:
        """(option, owning cells) of each option of some cells that is set (at its default it is not a choice)."""
        defaults = LayerOptions.defaults()
        return [(k, cells) for k, cells in LayerOptions.owners().items() if getattr(self, k) != defaults[k]]

    def check_cell(self, cell: str, noun: str = "cell", hint=None) -> "LayerOptions":
        """An option of another cell is refused, not ignored. ``noun``: what the user calls the cell (``model``
        on the command line); ``hint(option, owner)``: what to add to the line."""
        for key, cells in self.set_options():
            if cell not in cells:
                more = hint(key, cells[0]) if hint else ""
                raise ConfigError(f"{key}: an option of the {owner_names(cells)} only, got it with {noun} {cell!r}{more}")
        return self

    def layer_kwargs(self, cell: str) -> dict:
        """The keyword arguments of the cell's layer class: every layer option the cell reads, at its value."""
        kw = {}
        for f in dataclasses.fields(LayerOptions):
            if not f.metadata["layer"] or (f.metadata["cells"] and cell not in f.metadata["cells"]):
                continue
            value = getattr(self, f.name)
            if f.name in ("forget_bias", "update_bias") and value is None:
                continue                                     # the cell's own default initialisation
            if f.name == "recurrent_max":
                value = value or None                        # 0: no bound for a layer built directly
            kw[f.name] = value
        return kw


__all__ = ["LayerOptions", "owner_names", "REGULARISERS", "NONLINEARITIES", "RESETS", "RECURRENT_INITS"]
