"""Hydra sweeper plugin: a two-phase study, `python sweep/run.py -m hydra/sweeper=study drop_prob=0,0.5 ...`.

Only what Hydra discovers lives here (`StudySweeperConf`, registered as `hydra/sweeper=study`, and
`StudySweeper`); the work is in `sweep.study`, imported when the sweeper is used.
"""
