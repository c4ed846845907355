"""The layer options are declared once (rnnlab.engine.options.LayerOptions) and every reader takes them from there."""
import dataclasses

import numpy as np
import pytest

from rnnlab.engine.options import LayerOptions
from rnnlab.errors import ConfigError
from rnnlab.model.sequence_model import ModelConfig, SequenceModel
from rnnlab.training.config import TrainConfig


def test_config_and_model_inherit_the_options_and_declare_none_of_their_own():
    for cls in (TrainConfig, ModelConfig):
        assert issubclass(cls, LayerOptions)
        own = set(cls.__dict__.get("__annotations__", {}))
        assert not own & set(LayerOptions.names()), cls
        assert set(LayerOptions.names()) <= {f.name for f in dataclasses.fields(cls)}


def test_every_reader_knows_every_option(capsys):
    from rnnlab.cli.main import main
    from rnnlab.scale.sweep import _NOT_TASK
    from rnnlab.study.compare import ENTRY_KEYS
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    for name in LayerOptions.names():
        assert "--" + name.replace("_", "-") in help_text, name
        assert name in ENTRY_KEYS and name in _NOT_TASK, name
    assert LayerOptions.help("zoneout").split(" (")[0] in " ".join(help_text.split())


@pytest.mark.parametrize("cell, options, attrs", [
    ("lstm", {"peephole": True, "forget_bias": 2.0, "zoneout": 0.1, "zoneout_cell": 0.2},
     {"peephole": True, "zoneout": 0.1, "zoneout_cell": 0.2}),
    ("gru", {"reset": "before", "update_bias": 1.5, "recurrent_dropout": 0.25}, {"recurrent_dropout": 0.25}),
    ("rnn", {"nonlinearity": "relu", "input_dropout": 0.1}, {"nonlinearity": "relu", "input_dropout": 0.1}),
])
def test_the_model_builds_its_layer_from_the_options(cell, options, attrs):
    model = SequenceModel(ModelConfig(input_size=3, output_size=2, cell=cell, hidden_size=6, **options), seed=0)
    for k, v in attrs.items():
        got = model.rnn.regularization[k] if k in model.rnn.regularization else getattr(model.rnn, k)
        assert got == v, k
    if cell == "lstm":
        H = 6
        p = dict(model.rnn.named_parameters())
        np.testing.assert_allclose(p["bias_ih_l0"][H:2 * H] + p["bias_hh_l0"][H:2 * H], 2.0, rtol=1e-6)
    if cell == "gru":
        assert model.rnn.cell_opts["reset"] == "before"
        p = dict(model.rnn.named_parameters())
        np.testing.assert_allclose(p["bias_ih_l0"][6:12] + p["bias_hh_l0"][6:12], 1.5, rtol=1e-6)


def test_an_option_of_another_cell_is_refused_by_every_reader():
    with pytest.raises(ConfigError, match=r"^forget_bias: an option of the LSTM only, got it with cell 'gru'"):
        ModelConfig(input_size=3, output_size=2, cell="gru", forget_bias=1.0).validate()
    with pytest.raises(ConfigError, match=r"^layer_norm: an option of the LSTM and the GRU only.*--model"):
        TrainConfig(model="rnn", layer_norm=True).check_cell_options()
    from rnnlab.study.compare import parse_model
    with pytest.raises(ConfigError, match=r"peephole is an option of the LSTM, not of 'gru'"):
        parse_model("gru+peephole")


def test_a_comparison_applies_an_option_to_its_own_cells_only():
    cfg = TrainConfig(model="lstm", forget_bias=1.0, reset="before", zoneout=0.1)
    gru = cfg.for_model(model="gru")
    assert gru.forget_bias is None and gru.reset == "before" and gru.zoneout == 0.1
    lstm = cfg.for_model(model="lstm", hidden_size=9)
    assert lstm.forget_bias == 1.0 and lstm.reset == "after" and lstm.hidden_size == 9


def test_each_option_is_range_checked_once():
    for bad, match in [({"zoneout": 1.0}, "zoneout"), ({"nonlinearity": "sigmoid"}, "nonlinearity"),
                       ({"proj_size": -1}, "proj_size"), ({"forget_bias": float("nan")}, "forget_bias"),
                       ({"recurrent_init": "eye"}, "recurrent_init")]:
        for make in (lambda: LayerOptions(**bad).check_options(), lambda: TrainConfig(**bad).validate(),
                     lambda: ModelConfig(input_size=2, output_size=2, cell="lstm", **bad).validate()):
            with pytest.raises(ConfigError, match=f"^{match}"):
                make()


def test_estimators_take_the_layer_options():
    pytest.importorskip("sklearn")
    from rnnlab.estimators import RNNClassifier
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 5, 2)), np.arange(16) % 2
    # float64 and 3 rows a batch: the compiled loop test_variants.py compiles for these options (no loop of its own)
    est = RNNClassifier(cell="lstm", hidden_size=4, epochs=1, batch_size=3, dtype="float64",
                        layer_options={"zoneout": 0.1, "layer_norm": True})
    est.fit(X, y)
    assert est.model_.config.zoneout == 0.1 and est.model_.rnn.layer_norm
    with pytest.raises(ConfigError, match=r"^layer_options: unknown option 'zonout'.*zoneout"):
        RNNClassifier(hidden_size=4, epochs=1, layer_options={"zonout": 0.1}).fit(X, y)
    with pytest.raises(ConfigError, match=r"^layer_options: peephole: an option of the LSTM only, got it with cell 'gru'"):
        RNNClassifier(cell="gru", hidden_size=4, epochs=1, layer_options={"peephole": True}).fit(X, y)


def test_every_training_flag_has_a_sentence_a_group_and_its_default(capsys):
    from rnnlab.cli.main import main
    from rnnlab.training.config import GROUPS
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("group") in GROUPS, f.name
        assert len(f.metadata.get("help", "").split()) >= 2, f.name
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for g in GROUPS:
        assert f"{g}" in text
    assert "clip the gradient's global norm at this value, ON by default" in text
    assert "--bidirectional, --no-bidirectional a second direction" in text
