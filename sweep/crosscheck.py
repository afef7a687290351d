"""`python -m sweep.crosscheck <sweep id> <other sweep id>`: two runs of one study, side by side.

A verdict should not depend on the CPU's kernels. Run a study twice, once as usual and once under another oneDNN
kernel family (for fp32 on any AVX-512 machine: `ONEDNN_MAX_CPU_ISA=AVX2`, docs/verdicts.md), each with its own
`tracking.sweep_id`, then compare their headline (confirmatory) verdicts:

    ONEDNN_MAX_CPU_ISA=AVX2 python sweep/run.py -m +experiment=overfit tracking.sweep_id=overfit-avx2
    python -m sweep.crosscheck overfit overfit-avx2

Prints one line per (setting, metric): both verdicts with their intervals and `same`, `one inconclusive`
(compatible) or `contradicted`, then the CPUs and ISA families each run recorded. Exit 1 if any verdict is
contradicted. Reads the MLflow store only.
"""

from __future__ import annotations

import argparse
import os
import sys

from sweep.config import PROJECT_ROOT

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def main(argv: list[str] | None = None) -> int:
    from mlflow.tracking import MlflowClient

    # pandas and MLflow load only when it runs: --help answers at once
    from sweep import analysis as A
    from sweep.util.redact import redact

    ap = argparse.ArgumentParser(prog="python -m sweep.crosscheck", description=__doc__.splitlines()[0])
    ap.add_argument("a", help="the sweep id (tracking.sweep_id) of one run of the study")
    ap.add_argument("b", help="the sweep id of the other run")
    ap.add_argument("--tracking-uri", default=f"sqlite:///{PROJECT_ROOT / 'runs' / 'mlflow.db'}")
    ap.add_argument("--experiment", default="dropout")
    args = ap.parse_args(argv)
    client = MlflowClient(args.tracking_uri)
    exp = client.get_experiment_by_name(args.experiment)
    frames = {}
    for sid in (args.a, args.b):
        parents = (
            []
            if exp is None
            else client.search_runs(
                [exp.experiment_id], f"tags.sweep_id = '{sid}' and tags.sweep_role = 'parent'", max_results=1
            )
        )
        if not parents:
            print(
                f"error: no sweep {sid!r} in experiment {args.experiment!r} of {redact(args.tracking_uri)}",
                file=sys.stderr,
            )
            return 2
        frames[sid] = A.children_frame(client, parents[0].info.run_id)
    table = A.crosscheck(frames[args.a], frames[args.b])
    if table.empty:
        print("error: the two sweeps share no compared setting", file=sys.stderr)
        return 2
    width = max(len(x) for x in table["label"])
    print(f"{'setting':{width}}  metric    {args.a:>36}  {args.b:>36}  relation")
    for r in table.itertuples():
        print(
            f"{r.label:{width}}  {r.metric:8}  {r.a_interval + ' ' + r.a:>36}  {r.b_interval + ' ' + r.b:>36}  "
            f"{r.relation}"
        )
    n = table["relation"].value_counts()
    print(
        f"{len(table)} verdicts: {n.get(A.SAME, 0)} the same, {n.get(A.ONE_INCONCLUSIVE, 0)} where one run is "
        f"inconclusive, {n.get(A.CONTRADICTED, 0)} contradicted."
    )
    for sid, df in frames.items():
        print(f"{sid}: {A.machines_text(A.headline_frame(df))}")
    return 1 if n.get(A.CONTRADICTED, 0) else 0


if __name__ == "__main__":
    sys.exit(main())
