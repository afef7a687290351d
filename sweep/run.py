"""Entry point: `python sweep/run.py [-m] key=value ...`.

Checks the command line first (one clear line per mistake, before any data or MLflow run),
then hands over to Hydra, whose task function is `sweep.job.run`.
"""

import faulthandler
import os
import signal
import sys
from pathlib import Path


def _before_anything(signum, frame) -> None:
    """Ctrl-C or SIGTERM while the interpreter still imports (seconds: torch, Hydra, MLflow): nothing has been
    recorded yet, so one line and the exit code, not a KeyboardInterrupt traceback."""
    print(
        f"{'terminated (SIGTERM)' if signum == signal.SIGTERM else 'interrupted'} before anything started",
        file=sys.stderr,
        flush=True,
    )
    os._exit(128 + signum)


signal.signal(signal.SIGTERM, _before_anything)
signal.signal(signal.SIGINT, _before_anything)
# import `sweep`, `models`, `data` as packages (the project folder), never sweep/*.py as top-level modules
sys.path[0] = str(Path(__file__).resolve().parents[1])
# MLflow's usage telemetry off for this process and every job it starts (they inherit the environment): its client
# sets and unsets a variable in os.environ from a thread, and a joblib worker copying os.environ at that moment
# died with KeyError: '_MLFLOW_TELEMETRY_SESSION_ID' (MLflow 3.17). MLFLOW_DISABLE_TELEMETRY=false turns it on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow's client prints "View run ... at: <tracking URI>" after every run: with a password in
# MLFLOW_TRACKING_URI that lands on stdout, in SLURM .out files and CI logs. The summary says where runs are.
os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from sweep import job, preflight  # noqa: E402
from sweep.config import PROJECT_ROOT  # noqa: E402
from sweep.training.train import Diverged  # noqa: E402
from sweep.util import fastexit, signals  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig):
    """Returns the objective (val_acc by default) so sweepers can optimise it."""
    try:
        return job.run(cfg)
    except Diverged as e:  # recorded FAILED by the job; a single run must not exit 0
        print(f"error: the run diverged ({e}); try a lower optimizer.lr", file=sys.stderr)
        sys.exit(1)
    except preflight.USER_ERRORS as e:
        if preflight.debug() or job.in_multirun():
            raise  # the sweeper records this job as failed and goes on
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _stopped(e: KeyboardInterrupt) -> None:
    """Ctrl-C or SIGTERM, at any moment from pre-flight to the summary: the job already ended its run KILLED;
    end the sweep's parent too, say so in one line and exit 130 / 143. A second Ctrl-C during this clean-up
    stops at once, in one line too (what it leaves RUNNING the next start-up ends KILLED); once the clean-up is
    done, further interrupts are ignored so the exit handlers finish quietly."""
    code = signals.exit_code(e)  # 130 for Ctrl-C, 143 for SIGTERM
    try:
        # the callback module (MLflow) loads only after an interrupt
        from sweep.parent import close_open_parents

        close_open_parents("KILLED")
        print(f"{signals.describe(e)}: the current run was recorded as KILLED", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(
            f"{signals.describe(e)}, then interrupted again during the clean-up: stopped now; a run or sweep left "
            "RUNNING is ended KILLED by the next start-up",
            file=sys.stderr,
            flush=True,
        )
        os._exit(code)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on Ctrl-C is KeyboardInterrupt ...
    signals.install()  # ... and SIGTERM (SLURM, timeout, docker stop) takes Ctrl-C's path below
    os.environ[signals.SWEEP_PID_ENV] = str(os.getpid())  # jobs in other processes die with this one
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: where every thread is, on stderr
    try:
        preflight.main_or_exit(sys.argv[1:])
        main()
        signals.check()  # a SIGTERM whose interrupt was lost (signals.check) still ends the sweep 143
    except KeyboardInterrupt as e:
        _stopped(e)
    except BaseException as e:  # the tracking store stopped answering mid-sweep (record.TrackingLost)
        from sweep import parent, record

        if not isinstance(e, record.TrackingLost):
            raise
        sys.exit(parent.stop_after_outage(e))
    fastexit.exit_now(0)  # done and recorded: skip the ~1.5 s teardown of torch's and MLflow's modules
