"""Models: pure torch modules that know nothing about configs, data or tracking."""

from models.maxnorm import apply_max_norm, max_row_norm
from models.mlp import MLP, build_mlp

__all__ = ["MLP", "apply_max_norm", "build_mlp", "max_row_norm"]
