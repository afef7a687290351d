"""A plain Hydra app, not this project's: no `objective`, `trainer`, `tracking` or `optuna` node, no
`${root:}` resolver. It returns x² + y² (+ z² + w² when a custom search space adds them), like
hydra-optuna-sweeper's sphere example, so the sweeper's results can be checked by hand.

    python tests/helpers/plain_app/app.py -m hydra/sweeper=optuna 'x=interval(-2,2)' 'y=choice(-1,0,1)'
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def sphere(cfg: DictConfig) -> float:
    if cfg.get("error", False):
        raise RuntimeError("cfg.error is True")
    return sum(float(cfg.get(k, 0.0)) ** 2 for k in ("x", "y", "z", "w"))


def configure(cfg: DictConfig, trial) -> None:
    """A `custom_search_space`: z within max_z_difference_from_x of the x just drawn, and a new key w."""
    x = trial.params["x"]
    trial.suggest_float("z", x - cfg.max_z_difference_from_x, x + cfg.max_z_difference_from_x)
    trial.suggest_float("+w", 0.0, 1.0)


if __name__ == "__main__":
    sphere()
