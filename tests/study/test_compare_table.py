"""The comparison's table says what its numbers are: underflowed gradient ratios counted apart, not folded into an
interval; a setting an entry's cell does not have shown as '-'."""
from rnnlab.study.compare import _ratio_text, _setting
from rnnlab.study.compare import ratio_band as _band


def test_underflowed_ratios_are_counted_apart():
    text = _ratio_text(_band([1e-3, 1e-5, 0.0, 0.0, 1e-4]))
    assert text.startswith("0.0001 [") and text.endswith("over 3 seeds; 2 of 5 seeds 0 (underflow)")
    lo = float(text.split("[")[1].split(",")[0])
    assert 1e-7 < lo < 1e-4                             # the interval of the three numbers, not of a clamped 1e-300
    assert _ratio_text(_band([0.0, 0.0])) == "2 of 2 seeds 0 (underflow)"
    assert _ratio_text(_band([2.0, 8.0])).startswith("4 [")
    assert "1 of 3 undefined" in _ratio_text(_band([1.0, float("nan"), 4.0]))


def test_an_option_of_other_cells_is_a_dash():
    res = {"config": {"forget_bias": 1.0, "lr": 0.01}}
    assert _setting("forget_bias", {"cell": "gru", "config": {}}, res) == "-"
    assert _setting("forget_bias", {"cell": "lstm", "config": {}}, res) == 1.0
    assert _setting("lr", {"cell": "gru", "config": {"lr": 0.1}}, res) == 0.1
