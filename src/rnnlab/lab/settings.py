"""What the lab's page may set, checked as ``rnnlab train`` checks it, and the tour's chapters as presets.

``run_config(settings, out)`` turns the page's settings into a ``TrainConfig`` through ``rnnlab.training.config.resolve``
(the same validation and the same one-line errors as the command line), with the lab's size limits on top so a
run stays live on the page; ``check_buildable`` then builds the task and the model once, so a setting that only
fails when the model is made (an orthogonal init of a diagonal cell) is refused before any process starts.
"""
from __future__ import annotations

from rnnlab.errors import ConfigError, check_float, check_int

# the page's settings: TrainConfig keys, plus measure_every (the lab's own)
KEYS = ("task", "model", "seq_len", "tokens", "text", "hidden_size", "recurrent_init", "recurrent_radius",
        "forget_bias", "update_bias", "nonlinearity", "optimizer", "lr", "clip", "steps", "batch_size", "seed", "measure_every")
DEFAULTS = {"task": "adding", "model": "lstm", "seq_len": 50, "hidden_size": 32, "optimizer": "adam", "lr": 0.01,
            "clip": 1.0, "steps": 1000, "batch_size": 32, "seed": 0}
TASKS = ("adding", "copy", "selective_copy", "chars")   # the generated tasks and a text file; parity does not exist
INITS = ("uniform", "orthogonal")
# sizes above these make one step or one measurement too slow to watch on a laptop's CPU
LIMITS = {"seq_len": 400, "hidden_size": 256, "batch_size": 256, "steps": 50_000, "tokens": 64}


def _page_value(key, value):
    """The page sends every field as text or a number; a field left empty is not set."""
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            return None
    return value


def lab_settings(settings) -> dict:
    """The page's settings (a JSON object), unknown and empty ones refused or dropped, numbers read."""
    if not isinstance(settings, dict):
        raise ConfigError(f"settings: expected a JSON object of settings, got {type(settings).__name__}")
    unknown = sorted(set(settings) - set(KEYS))
    if unknown:
        from rnnlab.errors import closest
        raise ConfigError(f"settings: unknown setting {unknown[0]!r}{closest(unknown[0], KEYS)}; the lab sets "
                          f"{', '.join(KEYS)}")
    out = {}
    for k, v in settings.items():
        v = _page_value(k, v)
        if v is None:
            continue
        if isinstance(v, str) and k not in ("task", "model", "text", "recurrent_init", "nonlinearity", "optimizer"):
            try:                                    # a number typed into a text field
                v = int(v) if v.lstrip("+-").isdigit() else float(v)
            except ValueError:
                raise ConfigError(f"{k}: expected a number, got {v!r}") from None
        out[k] = v
    return out


def run_config(settings, out: str):
    """(TrainConfig for a run in folder ``out``, steps between measurements) from the page's settings."""
    from rnnlab.training.config import resolve
    s = {**DEFAULTS, **lab_settings(settings)}
    if s["task"] not in TASKS:
        raise ConfigError(f"task: the lab trains on {', '.join(TASKS)}, got {s['task']!r}")
    for k, high in LIMITS.items():
        if k in s and isinstance(s[k], int) and not isinstance(s[k], bool) and s[k] > high:
            raise ConfigError(f"{k}: the lab trains with {k} <= {high} so that the page stays live, got {s[k]}; "
                              f"use `rnnlab train` for larger runs")
    every = s.pop("measure_every", None)
    steps = s["steps"]
    overrides = {**s, "out": out, "quiet": True, "log_every": max(1, min(10, steps // 100 or 1)),
                 "eval_every": max(10, steps // 20), "checkpoint_every": max(10, steps // 10)}
    cfg = resolve(None, overrides)
    every = max(1, steps // 50) if every is None else check_int("measure_every", every, 1, steps)
    check_buildable(cfg)
    return cfg, every


def check_buildable(cfg) -> None:
    """Build the task and the model once, as the trainer would (its own checks, its own errors)."""
    from rnnlab.study.compare import check_buildable as buildable
    from rnnlab.tasks import build_task
    buildable(cfg, build_task(cfg))


def change_settings(body) -> dict:
    """A mid-run change from the page: lr and/or clip, each checked as the config checks it."""
    if not isinstance(body, dict):
        raise ConfigError(f"change: expected a JSON object with lr and/or clip, got {type(body).__name__}")
    out = {}
    for k in ("lr", "clip"):
        v = _page_value(k, body.get(k))
        if v is None:
            continue
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise ConfigError(f"{k}: expected a number, got {v!r}") from None
        out[k] = check_float(k, v, 0.0, low_open=(k == "lr"))
    if not out:
        raise ConfigError("change: expected lr and/or clip, got neither")
    return out


# the tour's chapters (docs/guide.md): settings for model A (and B, side by side) and what to look for
PRESETS = [
    {"id": "rnn", "chapter": 1,
     "title": {"en": "1. The RNN: hidden, output and prediction layers", "zh": "1. RNN：隐藏层、输出层与预测层"},
     "a": {"model": "rnn", "task": "adding", "seq_len": 10, "hidden_size": 32, "lr": 0.01, "clip": 1.0,
           "steps": 800},
     "say": {"en": "A tanh RNN on the adding problem with short sequences (T = 10): the learning curve falls well "
                   "below the always-predict-1 baseline. The heat map shows ||dL/dh_t|| at every step t of the "
                   "sequence: the loss sits at the last step, and every earlier step still receives a gradient.",
             "zh": "一个 tanh RNN 在短序列（T = 10）的加法问题上训练：学习曲线明显低于“总是预测 1”的基线。"
                   "热图显示序列中每一步 t 的 ||dL/dh_t||：损失在最后一步，较早的每一步仍然收到梯度。"}},
    {"id": "bptt", "chapter": 2,
     "title": {"en": "2. Backpropagation through time", "zh": "2. 随时间反向传播（BPTT）"},
     "a": {"model": "rnn", "task": "adding", "seq_len": 50, "hidden_size": 32, "lr": 0.01, "clip": 1.0,
           "steps": 800},
     "say": {"en": "BPTT sums the gradient over every step, each term a product of step Jacobians "
                   "diag(1 - h^2) W_hh. Read a row of the heat map from right (the loss) to left: with T = 50 the "
                   "colour fades by orders of magnitude, and the Jacobian norms ||dh_T/dh_t|| fall the same way.",
             "zh": "BPTT 把每一步的梯度相加，每一项都是单步雅可比矩阵 diag(1 - h^2) W_hh 的乘积。"
                   "从右（损失处）向左读热图的一行：T = 50 时颜色衰减了几个数量级，雅可比范数 ||dh_T/dh_t|| 也同样下降。"}},
    {"id": "vanishing", "chapter": 3,
     "title": {"en": "3. Vanishing and exploding gradients", "zh": "3. 梯度消失与梯度爆炸"},
     "a": {"model": "rnn", "task": "adding", "seq_len": 50, "hidden_size": 32, "recurrent_init": "orthogonal",
           "recurrent_radius": 0.8, "lr": 0.01, "clip": 0.0, "steps": 600},
     "b": {"model": "rnn", "hidden_size": 32, "recurrent_init": "orthogonal", "recurrent_radius": 1.3, "lr": 0.01},
     "say": {"en": "The same tanh RNN with W_hh scaled to spectral radius 0.8 (left) and 1.3 (right), clipping "
                   "off: the singular values sit below or above 1, and ||dL/dh_t|| vanishes geometrically on the "
                   "left while the right keeps it alive. Turn clipping on mid-run (clip = 1) and watch the "
                   "learning curve: clipping bounds an exploding step but brings back no vanished gradient.",
             "zh": "同一个 tanh RNN，W_hh 缩放到谱半径 0.8（左）和 1.3（右），不裁剪：奇异值分别在 1 以下或以上，"
                   "左边的 ||dL/dh_t|| 按几何级数消失，右边则保持下来。训练中途打开裁剪（clip = 1）并观察学习曲线："
                   "裁剪能限制爆炸的一步，却找不回已经消失的梯度。"}},
    {"id": "lstm", "chapter": 4,
     "title": {"en": "4. The LSTM: the forget-gate path", "zh": "4. LSTM：遗忘门路径"},
     "a": {"model": "lstm", "task": "adding", "seq_len": 100, "hidden_size": 32, "forget_bias": 1.0, "lr": 0.01,
           "steps": 1000},
     "b": {"model": "lstm", "hidden_size": 32, "forget_bias": 0.0, "lr": 0.01},
     "say": {"en": "Along the cell, dc_t/dc_(t-1) = diag(f_t): the product of forget gates over k steps scales the "
                   "gradient. With forget bias 1 (left) the gates start open and the product stays far from zero. "
                   "Watch the forget gate per unit: most units close a little as the model learns, while a few keep "
                   "theirs near 1 and carry the memory (the tour, section 4).",
             "zh": "沿着细胞状态，dc_t/dc_(t-1) = diag(f_t)：k 步遗忘门的乘积决定梯度的缩放。遗忘门偏置为 1（左）"
                   "时门一开始就是打开的，乘积远离零。观察每个单元的遗忘门：训练中多数单元的门略微关小，只有少数单元"
                   "把门保持在接近 1，由它们携带记忆（见导览第 4 节）。"}},
    {"id": "gru", "chapter": 5,
     "title": {"en": "5. The GRU: update and reset gates", "zh": "5. GRU：更新门与重置门"},
     "a": {"model": "gru", "task": "adding", "seq_len": 50, "hidden_size": 37, "lr": 0.01, "steps": 1000},
     "b": {"model": "gru", "hidden_size": 37, "update_bias": 1.0, "lr": 0.01},
     "say": {"en": "h_t = (1 - z) n + z h_(t-1): the update gate z is the share of the old state carried over, the "
                   "GRU's leaky version of the LSTM's cell path. Watch the distribution of z per unit: units that "
                   "carry the two marked numbers to the end learn z near 1; on the right the update-gate bias "
                   "starts every unit there.",
             "zh": "h_t = (1 - z) n + z h_(t-1)：更新门 z 是保留下来的旧状态的比例，相当于 LSTM 细胞路径的“漏”版本。"
                   "观察每个单元的 z 分布：负责把两个标记的数带到最后的单元会学到接近 1 的 z；右侧的更新门偏置让每个单元"
                   "一开始就在那里。"}},
    {"id": "lstm-gru", "chapter": 6,
     "title": {"en": "6. LSTM vs GRU, measured", "zh": "6. LSTM 与 GRU 的实测对比"},
     "a": {"model": "lstm", "task": "adding", "seq_len": 50, "hidden_size": 32, "forget_bias": 1.0, "lr": 0.01,
           "steps": 1200},
     "b": {"model": "gru", "hidden_size": 37, "lr": 0.01},
     "say": {"en": "The LSTM (32 units) and the GRU (37 units) at about the same parameter count, on the same data "
                   "and seed, as in the tour's comparison. Compare when each curve leaves the baseline and how much "
                   "gradient reaches the first steps once trained; one seed is a demonstration, not a ranking.",
             "zh": "LSTM（32 个单元）和 GRU（37 个单元）参数量大致相同，使用相同的数据和随机种子，与导览中的比较一致。"
                   "比较两条曲线何时离开基线，以及训练后有多少梯度到达最初的几步；单个种子只是演示，不是排名。"}},
]
