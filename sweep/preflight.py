"""Check the whole command line before Hydra starts any job.

Every value a sweep will try is composed and validated here (a grid's every point, an interval's
two ends, the search space in `hydra.sweeper.params`) and checked against this machine (device,
threads) and the data (batch size against the training split); the data files are acquired and
checked once; the Optuna sweeper makes every check it would make before its first trial; and the
stores are probed read-only (a corrupt, read-only or foreign SQLite file, a server that does not
answer or refuses the login). A mistake ends the program with one line naming the key, the bad
value and what is allowed, exit code 2, before any data loading, Hydra job or MLflow run.
Set DROPOUT_DEBUG=1 (or HYDRA_FULL_ERROR=1) to see tracebacks instead.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import data
from data.acquire import train_count
from data.load import split_indices
from sweep import record
from sweep.config import PROJECT_ROOT, Config, ConfigError, objective_names, validate
from sweep.config import one_line as _one_line
from sweep.training.train import THREADS_PER_CPU, max_threads, pick_device, selection_error
from sweep.util.redact import redact

USER_ERRORS = (ConfigError, data.DataError, record.TrackingError)
_SKIP_FLAGS = {
    "-h",
    "--help",
    "--hydra-help",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--cfg",
    "-c",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--experimental-rerun",
}
_FLAGS_WITH_VALUE = {"--package", "-p"}
_CONFIG_DIR = {"--config-dir", "-cd"}  # adds a folder of the user's own configs: checked like the project's


def debug() -> bool:
    return bool(os.environ.get("DROPOUT_DEBUG") or os.environ.get("HYDRA_FULL_ERROR"))


def main_or_exit(argv: list[str]) -> None:
    if debug():
        check_cli(argv)
        return
    try:
        check_cli(argv)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _overrides(argv: list[str]) -> list[str] | None:
    """The key=value part of argv, or None when a flag asks Hydra for something other than a run. A
    -cd/--config-dir DIR becomes the override that adds DIR to the config search path, as Hydra does."""
    out, skip_next, config_dir = [], False, None
    args = iter(argv)
    for arg in args:
        if skip_next:
            skip_next = False
        elif arg in _CONFIG_DIR:
            config_dir = next(args, None)
        elif arg.split("=", 1)[0] in _CONFIG_DIR:
            config_dir = arg.split("=", 1)[1]
        elif arg in _SKIP_FLAGS or arg.split("=", 1)[0] in _SKIP_FLAGS:
            return None
        elif arg in _FLAGS_WITH_VALUE:
            skip_next = True
        elif not arg.startswith("-"):
            out.append(arg)
    if config_dir:
        if any(o.lstrip("+~").startswith("hydra.searchpath=") for o in out):
            return None  # both: Hydra merges them its own way; the jobs still check every value
        if not Path(config_dir).is_dir():
            raise ConfigError(f"--config-dir={config_dir} is invalid: no such folder")
        out.insert(0, f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    return out


def _candidates(o: Override, exact_ranges: bool = False) -> list[str]:
    """Override strings for the values a sweep override can take (an interval: its two ends). A range:
    the values the Optuna sweeper uses (`exact_ranges`: start + k*step below stop, no float drift), else
    the ones Hydra's basic sweeper really runs (its float steps drift: range(0,0.2,0.1) includes 0.2)."""
    key = o.get_key_element()
    if not o.is_sweep_override():
        return [o.input_line]
    v = o.value()
    if isinstance(v, IntervalSweep):
        lo, hi = float(v.start), float(v.end)
        if not lo < hi:
            raise ConfigError(f"{o.input_line} is invalid: an interval needs lower < upper")
        inner = math.nextafter(hi, lo)  # an interval may end at an excluded bound such as p=1
        if "int" in v.tags or (isinstance(v.start, int) and isinstance(v.end, int)):
            return [f"{key}={int(lo)}", f"{key}={int(hi)}"]
        return [f"{key}={lo!r}", f"{key}={inner!r}"]
    if isinstance(v, RangeSweep) and v.step == 0:
        raise ConfigError(f"{o.input_line} is invalid: the step is 0")
    if exact_ranges and isinstance(v, RangeSweep):
        from sweep.search.space import format_value, range_values  # imports Optuna: only when searching

        return [f"{key}={format_value(x)}" for x in range_values(v)]
    return [f"{key}={s}" for s in o.sweep_string_iterator()]


def _check_distinct(o: Override) -> None:
    """A sweep that lists one value twice (0 and -0.0, 0.5 and 5e-1, 1 and 1.0) would train it twice."""
    if not o.is_sweep_override() or isinstance(o.value(), (IntervalSweep, RangeSweep)):
        return  # an interval has no list; a range steps (its step 0 is refused by _candidates)
    texts = list(o.sweep_string_iterator())
    # the user's own spelling (5e-1), which Hydra's strings normalise (0.5)
    typed = _typed_elements(o, len(texts)) or texts
    seen: dict[Any, str] = {}
    for text, shown in zip(texts, typed):
        try:
            value: Any = float(text)
        except ValueError:
            value = text
        if value in seen:
            raise ConfigError(f"{o.input_line} is invalid: {seen[value]} and {shown} are one value; list it once")
        seen[value] = shown


def _typed_elements(o: Override, count: int) -> list[str] | None:
    """The elements of a plain comma list as typed (`0.5,5e-1` -> ['0.5', '5e-1']); None for anything with
    brackets, quotes or a function (choice(...)), where Hydra's strings are shown instead."""
    text = o.input_line.split("=", 1)[1] if "=" in o.input_line else ""
    if any(c in text for c in "()[]{}'\"\\"):
        return None
    parts = [p.strip() for p in text.split(",")]
    return parts if len(parts) == count else None


def _compose(overrides: list[str]) -> DictConfig:
    try:
        with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=overrides, return_hydra_config=True)
    except MissingConfigException as e:
        opts = ", ".join(sorted(o for o in (e.options or []) if o != "schema"))
        bad = next(
            (x for x in overrides if x.lstrip("+~").split("=", 1)[0] == (e.missing_cfg_file or "").split("/")[0]), None
        )
        where = bad or e.missing_cfg_file
        raise ConfigError(f"{where} is not a known option" + (f"; allowed: {opts}" if opts else "")) from None
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_error_line(e)) from None


def _error_line(e: BaseException) -> str:
    """Hydra's message in one line. A bad value in a config file reads "In 'search/x': ValidationError raised
    while composing config:" with its cause on the lines below ("Value 'many' ... Integer", "full_key:
    hydra.sweeper.n_trials"): the key and the cause join the first line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), "")
        cause = next(
            (ln for ln in lines[1:] if not ln.startswith(("full_key:", "object_type=", "reference_type="))), ""
        )
        return f"{lines[0]} {key + ': ' if key else ''}{cause}".rstrip()
    return _one_line(e)


def _search_space(cfg: DictConfig) -> list[Override]:
    """The sweeper's `params` (search spaces from conf/search/*.yaml) as parsed overrides."""
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    lines = [f"{k}={v}" for k, v in params.items()]
    return _parse(lines)


def _parse(lines: list[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(lines)
    except HydraException as e:
        raise ConfigError(_one_line(e)) from None


def _sweeper_storage(composed: DictConfig, arguments: list[str]) -> str | None:
    """Every check the Optuna sweeper makes before its first trial (options, search space, direction against
    objective, grid, enqueued points), made here before any parent run; returns its storage URL (None when
    another sweeper is configured)."""
    target = OmegaConf.select(composed, "hydra.sweeper._target_") or ""
    if not target.startswith("hydra_plugins.dropout_optuna_sweeper."):
        return None
    refused = selection_error(objective_names(OmegaConf.select(composed, "objective")))  # the test set never selects
    if refused:
        raise ConfigError(refused)
    # optuna: imported only when the sweeper is the Optuna one
    from sweep.search import check_sweep
    from sweep.search.space import SweeperError

    try:
        options = OmegaConf.to_container(composed.hydra.sweeper, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e)) from None
    options.pop("_target_", None)
    try:
        check_sweep(options, arguments, composed)
    except SweeperError as e:
        raise ConfigError(str(e)) from None  # one line, or one per refused key
    return options.get("storage")


def _local_launcher(composed: DictConfig, multirun: bool) -> bool:
    """Whether the jobs run on this machine (a single run, Hydra's basic launcher, joblib), so its CUDA, MPS
    and CPU count are theirs; a cluster launcher (submitit, ray, rq) runs them elsewhere."""
    target = str(OmegaConf.select(composed, "hydra.launcher._target_") or "")
    return (
        not multirun
        or target.startswith("hydra._internal.")
        or "joblib" in target.lower()
        or "isolated" in target.lower()
    )


def _check_machine(checked: list[Config]) -> None:
    """trainer.device and trainer.threads against this machine."""
    for device in sorted({c.trainer.device for c in checked}):
        try:
            pick_device(device)
        except RuntimeError as e:
            raise ConfigError(str(e)) from None
    limit = max_threads()
    for c in checked:
        if c.trainer.threads is not None and c.trainer.threads > limit:
            raise ConfigError(
                f"trainer.threads={c.trainer.threads} is invalid: this machine has {os.cpu_count()} "
                f"CPUs; use at most {limit} ({THREADS_PER_CPU} per CPU), or null for torch's default"
            )


def _check_batch(c: Config, n_train: int) -> None:
    """With drop_last (the default) a batch larger than the training split leaves no step to take."""
    if c.trainer.drop_last and c.trainer.batch_size > n_train:
        raise ConfigError(
            f"trainer.batch_size={c.trainer.batch_size} is invalid: larger than the {n_train} training "
            f"images that data.train_subset and data.val_size leave; use at most {n_train}, or "
            f"trainer.drop_last=false to train on one batch of all of them"
        )


def probe_database(key: str, url: str, table: str, what: str) -> None:
    """Refuse a store that cannot be used, without writing to it: a SQLite file that is read-only, not a
    database, or another program's (tables, but no `table`); a server that does not answer or refuses the
    login. A missing SQLite file needs a writable folder (it is created on first use)."""
    import sqlalchemy

    shown = redact(url)
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:  # noqa: BLE001 - any parse failure means the same to the user
        raise ConfigError(f"{key}={shown} is not a database URL; e.g. sqlite:///runs/{what.lower()}.db") from None
    try:
        parsed.get_dialect()
    except Exception:  # noqa: BLE001 - sqlalchemy.exc.NoSuchModuleError: http://, a typo in the scheme
        raise ConfigError(
            f"{key}={shown} is not a database URL SQLAlchemy knows ({parsed.drivername}://); "
            f"e.g. sqlite:///runs/{what.lower()}.db or postgresql://user@host/db"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _probe_sqlite(key, shown, Path(parsed.database), table, what)
        return
    try:
        engine = sqlalchemy.create_engine(
            url, connect_args={"connect_timeout": 10} if url.startswith("postgres") else {}
        )
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as e:  # noqa: BLE001 - a missing driver, a refused connection, a wrong password: all the same to the user
        detail = " ".join(redact(str(getattr(e, "orig", None) or e)).split())[:300]
        raise ConfigError(
            f"{key}={shown} cannot be reached ({type(e).__name__}: {detail}); check the server, user and password"
        ) from None


def _probe_sqlite(key: str, shown: str, path: Path, table: str, what: str) -> None:
    if not path.exists():
        record.check_writable(key, path.parent, shown=shown)
        return
    if not path.is_file():
        raise ConfigError(f"{key}={shown}: {path} is not a file; point it at a database file")
    # root may write a file whose mode says read-only; the mode is the owner's intent, so it is honoured too
    if not os.access(path, os.R_OK | os.W_OK) or not path.stat().st_mode & 0o222:
        raise ConfigError(f"{key}={shown}: {path} is read-only; make it writable (chmod u+w) or choose another store")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)  # read-only: never changes the file
        try:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.Error as e:
        raise ConfigError(
            f"{key}={shown}: {path} is not a SQLite database ({e}); it was left untouched: move it "
            "aside or choose another store"
        ) from None
    if tables and table not in tables:
        raise ConfigError(
            f"{key}={shown}: {path} is not an {what} store (it has tables, but no '{table}'); choose another file"
        )


def _study_settings(composed: DictConfig, parsed: list[Override]) -> list[list[str]] | None:
    """Every setting hydra/sweeper=study will run, as full override lists (the command line's Hydra overrides
    plus the setting's), or None for another sweeper. Its refusals (a seed axis, tracking off) are one line."""
    target = OmegaConf.select(composed, "hydra.sweeper._target_") or ""
    if not target.startswith("hydra_plugins.dropout_study_sweeper."):
        return None
    # the study sweeper (pandas): imported only for a study
    from sweep.study import StudyError, grid

    if not OmegaConf.select(composed, "tracking.enabled"):
        raise ConfigError(
            "tracking.enabled=false is invalid with hydra/sweeper=study: a study designs its "
            "confirmatory phase from the exploratory runs in the MLflow store"
        )
    sweeper = composed.hydra.sweeper
    try:
        params, settings = (
            OmegaConf.to_container(sweeper[k], resolve=False) if sweeper.get(k) is not None else None
            for k in ("params", "settings")
        )
        points = grid(params, [o.input_line for o in parsed if not o.is_hydra_override()], settings)
    except StudyError as e:
        raise ConfigError(str(e)) from None
    hydra_side = [o.input_line for o in parsed if o.is_hydra_override()]
    return [hydra_side + point for point in points]


def _check_identifiers(composed: DictConfig, checked: list[Config]) -> None:
    """A name the program writes and later searches for (the experiment, a sweep id, a study name) must not
    contain a secret: masked where it is written, it would no longer match where it is read (grid resume found
    nothing), and written unmasked it would leak the secret. Refused in one line, masked."""
    found: list[tuple[str, Any]] = [
        (k, v)
        for c in checked
        for k, v in (("tracking.experiment", c.tracking.experiment), ("tracking.sweep_id", c.tracking.sweep_id))
    ]
    try:
        found.append(("hydra.sweeper.study_name", OmegaConf.select(composed, "hydra.sweeper.study_name", default=None)))
    except OmegaConfBaseException:
        pass
    for key, value in found:
        if isinstance(value, str) and redact(value) != value:
            raise ConfigError(
                f"{key}={redact(value)!r} is invalid: it contains a password or token this process "
                "knows (typed, or in the environment); a name MLflow or Optuna is searched by cannot "
                "hold one: choose another name"
            )


def _grid_combinations(composed: DictConfig, parsed: list[Override]) -> list[Config]:
    """Every combination of a grid's axes, validated whole: each value alone was checked above, but two values
    that are fine one at a time can clash (a batch larger than a smaller subset, a warm-up longer than fewer
    epochs). Values are merged into the composed config (milliseconds a point); an axis that picks a config
    group (optimizer=adam,sgd) is composed instead."""
    axes = [o for o in parsed if o.is_sweep_override() and not o.is_hydra_override()]
    if len(axes) < 2:
        return []
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in axes]
    groups = {p.name for p in (PROJECT_ROOT / "conf").iterdir() if p.is_dir()}
    by_group = any(
        o.key_or_group.lstrip("+~").split(".")[0] in groups and "." not in o.key_or_group or o.is_add() or o.is_delete()
        for o in axes
    )
    parser = OverridesParser.create()
    out = []
    for combo in itertools.product(*choices):
        if by_group:
            cfg = _compose([*fixed, *combo])
        else:
            cfg = copy.deepcopy(composed)
            for line in combo:
                (o,) = parser.parse_overrides([line])
                try:
                    OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
                except OmegaConfBaseException as e:
                    raise ConfigError(_error_line(e)) from None
        try:
            out.append(validate(cfg))
        except ConfigError as e:
            raise ConfigError(f"{e} (in the grid point {' '.join(combo)})") from None
    return out


def check_cli(argv: list[str]) -> list[Config]:
    """Validate everything a run of `argv` would try; return the typed configs that were checked."""
    lines = _overrides(argv)
    if lines is None:
        return []
    parsed = _parse(lines)
    for o in parsed:
        _check_distinct(o)
    base = [c[0] for c in map(_candidates, parsed)]  # a range's first value is its start either way
    composed = _compose(base)
    optuna = (OmegaConf.select(composed, "hydra.sweeper._target_") or "").startswith(
        "hydra_plugins.dropout_optuna_sweeper."
    )
    multirun = any(a in ("-m", "--multirun") for a in argv)
    study = _study_settings(composed, parsed) if multirun else None
    variants = [base]
    if study is not None:  # a study: every setting it will run, each checked whole
        variants += study
    else:
        for i, o in enumerate(parsed):
            for alt in _candidates(o, exact_ranges=optuna)[1:]:
                variants.append(base[:i] + [alt] + base[i + 1 :])
        # the search space of a config-file sweep (e.g. +search=dropout) is validated like the command line's
        for o in _search_space(composed):
            if o.key_or_group in {p.key_or_group for p in parsed}:
                continue  # the command line overrides it
            for alt in _candidates(o, exact_ranges=optuna):
                variants.append(base + [alt])
    checked = [validate(composed)] + [validate(_compose(v)) for v in variants[1:]]
    if multirun and study is None and not optuna:  # Hydra's basic sweeper runs the product of the axes
        checked += _grid_combinations(composed, parsed)
    if _local_launcher(composed, multirun):
        _check_machine(checked)
    # the sweeper is given the command line's own overrides (a sweep override as written), not Hydra's
    arguments = [o.input_line for o in parsed if not o.is_hydra_override()]
    storage = _sweeper_storage(composed, arguments) if multirun else None
    for name, root, download, verify in {(c.data.name, c.data.root, c.data.download, c.data.verify) for c in checked}:
        data.ensure_files(name, root, download=download, verify=verify)
    for c in checked:  # split sizes against the real file: a bad data.val_size fails here, not in every job
        train_idx, _ = split_indices(
            train_count(c.data.name, c.data.root),
            val_size=c.data.val_size,
            seed=c.data.split_seed,
            train_subset=c.data.train_subset,
        )
        _check_batch(c, len(train_idx))
    _check_identifiers(composed, checked)
    if checked[0].tracking.enabled:
        if checked[0].tracking.uri.startswith("sqlite:"):
            probe_database("tracking.uri", checked[0].tracking.uri, "experiments", "MLflow")
        record.check_reachable(checked[0].tracking.uri)
        record.check_artifact_location(checked[0].tracking)
    if storage:
        probe_database("hydra.sweeper.storage", storage, "studies", "Optuna")
    out_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"  # created last: a refused command leaves none
    record.check_writable(out_key, Path(OmegaConf.select(composed, out_key)))
    return checked
