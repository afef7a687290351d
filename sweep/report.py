"""`python -m sweep.report`: executes `analysis.ipynb` on the MLflow store and writes an HTML report.

Parameters are injected papermill-style: a code cell tagged `injected-parameters` goes right after the
cell tagged `parameters`. Next to the HTML (default `runs/report.html`) come the executed notebook
(`report.ipynb`) and a folder of the figures as PNGs (`report_figures/`, with `ranking.csv` and
`summary.json`). Exit status: 0 when every cell ran and the runs could be analysed, 1 when the store had
no usable runs (the report then says why), 2 for a bad command line, 3 when a notebook cell failed.

Nothing the report writes holds a password: a parameter with one (`--tracking-uri http://u:pw@host`) reaches
the kernel through its environment, not through the injected cell, and every cell, output and file is
passed through `sweep.util.redact` before it is written.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path
from typing import Any

import nbformat

from sweep.config import PROJECT_ROOT as ROOT

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as sweep/run.py: no telemetry thread in the kernel either
from sweep.util.redact import learn, redact

NOTEBOOK = ROOT / "analysis.ipynb"
DEFAULT_OUT = ROOT / "runs" / "report.html"


def parameter_names(nb) -> list[str]:
    """Names assigned in the cell tagged `parameters`."""
    cell = _parameters_cell(nb)
    names = []
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names


def _parameters_cell(nb):
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    raise ValueError("the notebook has no cell tagged 'parameters'")


def inject_parameters(nb, params: dict[str, Any], from_env: dict[str, str] | None = None):
    """Papermill's convention: a cell tagged `injected-parameters` right after the `parameters` cell
    (replacing an earlier injected one). Unknown names are an error, not silently ignored.
    `from_env` (parameter -> environment variable) makes the cell read those values from the kernel's
    environment, so that they are never written into the notebook."""
    from_env = from_env or {}
    known = parameter_names(nb)
    unknown = sorted((set(params) | set(from_env)) - set(known))
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {', '.join(unknown)}; the notebook takes {', '.join(known)}")
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    src = "# Injected by sweep.report\n" + ("import os\n" if from_env else "")
    src += "".join(f"{k} = {v!r}\n" for k, v in params.items() if k not in from_env)
    src += "".join(f"{k} = os.environ[{var!r}]  # holds a password: not written here\n" for k, var in from_env.items())
    cell = nbformat.v4.new_code_cell(src, metadata={"tags": ["injected-parameters"]})
    cell["id"] = "injected-parameters"
    nb.cells.insert(nb.cells.index(_parameters_cell(nb)) + 1, cell)
    return nb


def cell_errors(nb) -> list[str]:
    """`<first line of the cell>: <ErrorName>: <message>` for every cell that raised."""
    errors = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first = (cell.source.splitlines() or [""])[0]
                errors.append(f"cell '{first[:60]}': {out.get('ename')}: {out.get('evalue')}")
    return errors


def secret_env(params: dict[str, Any]) -> dict[str, str]:
    """Parameter -> kernel environment variable, for every string parameter that holds a secret."""
    learn(params)
    return {k: f"SWEEP_REPORT_{k.upper()}" for k, v in params.items() if isinstance(v, str) and redact(v) != v}


def redact_notebook(nb):
    """Every cell's source and every text output (streams, HTML, Markdown, plain text, errors, SVG)
    through `redact`; images stay as they are."""

    def clean(value):
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    for cell in nb.cells:
        cell.source = redact(cell.source)
        for out in cell.get("outputs", []):
            for key in ("text", "evalue", "traceback"):
                if key in out:
                    out[key] = clean(out[key])
            for mime, value in out.get("data", {}).items():
                if not mime.startswith("image/") or mime == "image/svg+xml":
                    out["data"][mime] = (
                        clean(value) if not isinstance(value, dict) else json.loads(redact(json.dumps(value)))
                    )
    return nb


def execute(params: dict[str, Any], notebook: Path = NOTEBOOK, cwd: Path = ROOT, timeout: int = 900):
    """Runs the notebook in a fresh kernel (this interpreter's ipykernel); returns the executed notebook,
    redacted. Cells go on after an error so the report still shows everything else; see `cell_errors`."""
    import zmq
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from traitlets.config import Config

    hidden = secret_env(params)
    nb = inject_parameters(nbformat.read(notebook, as_version=4), params, from_env=hidden)
    config = Config()
    if zmq.has("curve") and "transport_encryption" in KernelManager.class_traits():
        # the kernel talks over loopback TCP: encrypt that where pyzmq and jupyter_client can (CurveZMQ)
        config.KernelManager.transport_encryption = "auto"
    NotebookClient(
        nb,
        config=config,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(cwd)}},
    ).execute(env={**os.environ, **{var: params[k] for k, var in hidden.items()}})
    return redact_notebook(nb)


def to_html(nb, show_code: bool = False) -> str:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="lab", exclude_input=not show_code, exclude_input_prompt=True, exclude_output_prompt=True
    )
    html, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": "Dropout sweep report"}})
    return html


def _absolute_sqlite(uri: str) -> str:
    """sqlite:///runs/x.db is relative to where the user typed it; the kernel runs in the project root."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////") and uri != "sqlite:///:memory:":
        return "sqlite:///" + str((Path.cwd() / uri.removeprefix("sqlite:///")).resolve())
    return uri


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sweep.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--tracking-uri", help="MLflow store (default: sqlite:///<project>/runs/mlflow.db)")
    p.add_argument("--experiment", default="dropout", help="MLflow experiment name (default: dropout)")
    p.add_argument("--parent-run-id", help="the sweep's parent run id (default: the newest sweep with finished runs)")
    p.add_argument("--sweep-id", help="or the sweep's sweep_id tag")
    p.add_argument("--optuna-storage", help="Optuna storage URL, e.g. sqlite:///runs/optuna.db")
    p.add_argument("--study", help="Optuna study name (default: the one the runs name)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="HTML report (default: runs/report.html)")
    p.add_argument("--figures-dir", type=Path, help="where the PNGs go (default: <out>_figures next to the HTML)")
    p.add_argument("--notebook", type=Path, default=NOTEBOOK, help=argparse.SUPPRESS)
    p.add_argument("--show-code", action="store_true", help="include the notebook's code in the HTML")
    p.add_argument("--timeout", type=int, default=900, help="seconds per cell (default: 900)")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other notebook parameter (Python literal), e.g. -p max_curve_panels=8",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    learn(list(sys.argv[1:] if argv is None else argv))  # passwords typed anywhere on the command line
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    figures = args.figures_dir or out.with_name(out.stem + "_figures")
    params: dict[str, Any] = {"experiment": args.experiment, "figures_dir": str(figures.resolve())}
    for name, value in (
        ("tracking_uri", args.tracking_uri),
        ("parent_run_id", args.parent_run_id),
        ("sweep_id", args.sweep_id),
        ("optuna_storage", args.optuna_storage),
        ("study_name", args.study),
    ):
        if value is not None:
            params[name] = _absolute_sqlite(value) if name in ("tracking_uri", "optuna_storage") else value
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            print(f"error: -p {item!r}: expected NAME=VALUE", file=sys.stderr)
            return 2
        params[name.strip()] = _value(value)
    if "://" not in str(params.get("tracking_uri", "sqlite://")):
        print(
            f"error: --tracking-uri {redact(params['tracking_uri'])!r}: expected a URI such as sqlite:///path/mlflow.db",
            file=sys.stderr,
        )
        return 2
    if figures.is_dir():  # a previous report's files must not pass for this one's
        for stale in [*figures.glob("*.png"), figures / "summary.json", figures / "ranking.csv"]:
            stale.unlink(missing_ok=True)
    try:
        nb = execute(params, notebook=args.notebook, timeout=args.timeout)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    out.parent.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    out.write_text(redact(to_html(nb, show_code=args.show_code)), encoding="utf-8")
    nbformat.write(nb, out.with_suffix(".ipynb"))
    for written in (figures / "summary.json", figures / "ranking.csv"):  # the kernel wrote these
        if written.is_file():
            text = written.read_text(encoding="utf-8")
            if redact(text) != text:
                written.write_text(redact(text), encoding="utf-8")

    summary_file = figures / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    errors = cell_errors(nb)
    print(f"report: {out}")
    if summary.get("figures"):
        print(f"figures ({len(summary['figures'])}): {', '.join(summary['figures'])} in {figures}")
    for name, why in summary.get("skipped", {}).items():
        print(f"not drawn: {name}: {why}")
    if summary.get("sentence"):
        print(summary["sentence"])
    if errors:
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        return 3
    if not summary.get("ok", False):
        print(f"error: {summary.get('message') or 'the notebook did not finish its analysis'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
