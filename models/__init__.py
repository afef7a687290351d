"""Models: pure torch modules that know nothing about configs, data or tracking."""
from models.mlp import MLP, build_mlp

__all__ = ["MLP", "build_mlp"]
