"""rnnlab: RNN, LSTM and GRU from first principles on NumPy, verified against PyTorch."""
from .errors import CheckpointError, ConfigError, DTypeError, NonFiniteError, RnnlabError, ShapeError
from .layers import GRU, LSTM, RNN

__version__ = "0.1.0"
__all__ = ["RNN", "LSTM", "GRU", "RnnlabError", "ShapeError", "ConfigError", "CheckpointError",
           "NonFiniteError", "DTypeError"]
