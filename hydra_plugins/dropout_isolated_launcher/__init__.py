"""`hydra/launcher=isolated`: each job in its own process, so one killed job costs one job
(sweep/search/isolated.py)."""
