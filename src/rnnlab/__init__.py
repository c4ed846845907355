"""rnnlab: RNN, LSTM and GRU from first principles on NumPy, verified against PyTorch."""
from rnnlab.errors import (
    BackendError, CheckpointError, ConfigError, DataError, DTypeError, ModifiedInputError, NonFiniteError,
    RnnlabError, ShapeError,
)
from rnnlab.engine.grad_mode import enable_grad, is_grad_enabled, no_grad
from rnnlab.engine.layers import GRU, LRU, LSTM, RNN, IndRNN, MinGRU, MinLSTM
from rnnlab.model.sequence_model import ModelConfig, SequenceModel
from rnnlab.model.stream import Stream
from rnnlab.training.trainer import RunResult, Trainer, evaluate, load_model, resume, train

__version__ = "0.1.0"

_ESTIMATORS = ("RNNClassifier", "RNNRegressor", "RNNTagger")


def __getattr__(name):
    # the scikit-learn estimators load scikit-learn only when asked for
    if name in _ESTIMATORS:
        from rnnlab import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'rnnlab' has no attribute {name!r}")

__all__ = ["RNN", "LSTM", "GRU", "MinGRU", "MinLSTM", "IndRNN", "LRU", "Stream", "no_grad", "enable_grad",
           "is_grad_enabled", "SequenceModel", "ModelConfig", "Trainer", "RunResult", "train", "resume", "evaluate",
           "load_model",
           "RnnlabError", "ShapeError", "ConfigError", "CheckpointError", "NonFiniteError", "DTypeError",
           "ModifiedInputError", "BackendError", "DataError", *_ESTIMATORS]
