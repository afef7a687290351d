"""sweep.stats against hand-computed values: settings and replicates, paired intervals, Holm, ties, sentences."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sweep import stats as S

# Hand values used below.
# diffs [1, 2, 3]: mean 2, sd 1, se 1/sqrt(3) = 0.577350; t(0.975, 2 df) solves t/sqrt(2 + t^2) = 0.95, i.e.
# t^2 = 2 * 0.95^2 / (1 - 0.95^2) = 18.51282 -> t = 4.302653; half-width 4.302653 * 0.577350 = 2.484138.
# t statistic 2 / 0.577350 = sqrt(12); with 2 df the two-sided p is 1 - t/sqrt(2 + t^2) = 1 - sqrt(12/14).
T2 = math.sqrt(2 * 0.95 ** 2 / (1 - 0.95 ** 2))
HALF_123 = T2 / math.sqrt(3)
P_123 = 1 - math.sqrt(12 / 14)  # 0.0741799
# diffs [2, 3, 4, 3]: mean 3, sd sqrt(2/3), se sqrt(2/3)/2 = 0.408248, t = 3/0.408248 = sqrt(54) = 7.348469;
# with 3 df the two-sided p is 1 - (2/pi)(th + sin th cos th), th = atan(t/sqrt(3)) (Student's closed form);
# t(0.975, 3 df) = 3.182446 (printed t tables).
T_2343 = math.sqrt(54)
TH = math.atan(T_2343 / math.sqrt(3))
P_2343 = 1 - (2 / math.pi) * (TH + math.sin(TH) * math.cos(TH))  # 0.0052079
HALF_2343 = 3.182446 * math.sqrt(2 / 3) / 2

PARAMS = ["drop_prob", "input_drop_prob", "layer_drop_probs", "layer1_drop_prob", "layer2_drop_prob",
          "optimizer.lr", "trainer.precision", "trainer.epochs", "data.train_subset", "tracking.uri",
          "trainer.threads", "trainer.progress", "seed"]


def run(p=0.0, seed=1, status="FINISHED", pruned=None, lr="0.001", precision="fp32", layers=None, **metrics):
    """One run as MLflow hands it over: params as strings, metrics as floats."""
    layers = layers or [None, None]
    eff = [p if x is None else x for x in layers]
    return {"drop_prob": str(p), "input_drop_prob": "0.0", "layer_drop_probs": str(layers),
            "layer1_drop_prob": str(eff[0]), "layer2_drop_prob": str(eff[1]), "optimizer.lr": lr,
            "trainer.precision": precision, "trainer.epochs": "15", "data.train_subset": "None",
            "tracking.uri": "sqlite:///x.db", "trainer.threads": "None", "trainer.progress": "True",
            "seed": str(seed), "status": status, "pruned": pruned, **metrics}


def frame(rows) -> pd.DataFrame:
    return S.add_setting_column(pd.DataFrame(rows), PARAMS)


# ---------------------------------------------------------------- settings

def test_exact_values_are_distinct_settings_and_spellings_are_one():
    df = frame([run(p=0.2996), run(p=0.3012), run(p="0.3"), run(p=0.3, seed=2), run(p="3e-1", seed=3)])
    assert df[S.SETTING].nunique() == 3
    assert list(df[S.LABEL]) == ["p=0.2996", "p=0.3012", "p=0.3", "p=0.3", "p=0.3"]


@pytest.mark.parametrize("change", [{"lr": "0.01"}, {"precision": "bf16"}])
def test_lr_or_precision_makes_another_setting(change):
    df = frame([run(p=0.3), run(p=0.3, seed=2, **change)])
    assert df[S.SETTING].nunique() == 2


def test_seed_and_keys_that_do_not_change_training_are_not_part_of_a_setting():
    a, b = run(p=0.3, seed=1), run(p=0.3, seed=2)
    b.update({"tracking.uri": "http://elsewhere:5000", "trainer.threads": "2", "trainer.progress": "False"})
    df = frame([a, b])
    assert df[S.SETTING].nunique() == 1
    assert S.setting_key({"drop_prob": "0.3", "seed": "1", "tracking.uri": "a", "trainer.device": "cpu"}) == \
        S.setting_key({"drop_prob": 0.3, "seed": 9, "tracking.uri": "b", "trainer.device": "auto"})
    # oneDNN or BLAS sums the same products: one setting, also with runs logged before the key existed
    assert S.setting_key({"drop_prob": 0.3, "trainer.cpu_matmul": "blas"}) == \
        S.setting_key({"drop_prob": 0.3, "trainer.cpu_matmul": "auto"}) == S.setting_key({"drop_prob": 0.3})
    assert S.setting_key({"drop_prob": 0.3, "trainer.epochs": 15}) != S.setting_key({"drop_prob": 0.3, "trainer.epochs": 60})


def test_canonical_values():
    assert S.canonical("0.0") == S.canonical(0) == S.canonical(0.0) == "0"
    assert S.canonical("15") == S.canonical(15.0) == "15"
    assert S.canonical("1e-3") == S.canonical(0.001) == "0.001"
    assert S.canonical(0.2996) != S.canonical(0.3012)
    assert S.canonical(float("nan")) == S.canonical(None) == S.canonical("null") == S.canonical(pd.NA) == "None"
    assert S.canonical("[None, 0.0]") == S.canonical([None, 0]) == "[None, 0]"
    assert S.canonical("fp32") == "fp32"


def test_labels_name_only_what_varies():
    # a drop_prob sweep: the per-layer rates follow drop_prob and are left out of the label
    df = frame([run(p=0.0), run(p=0.5)])
    assert list(df[S.LABEL]) == ["p=0", "p=0.5"]
    # drop_prob x lr grid: both named
    df = frame([run(p=0.0), run(p=0.5, lr="0.01")])
    assert list(df[S.LABEL]) == ["p=0, optimizer.lr=0.001", "p=0.5, optimizer.lr=0.01"]
    # per-layer search: drop_prob constant, the effective per-layer rates named, layer_drop_probs not
    df = frame([run(p=0.3, layers=[0.1, None]), run(p=0.3, layers=[0.2, 0.4])])
    assert list(df[S.LABEL]) == ["p1=0.1, p2=0.3", "p1=0.2, p2=0.4"]
    # without the effective rates, layer_drop_probs itself names the setting
    df = S.add_setting_column(df, ["drop_prob", "layer_drop_probs", "seed"])
    assert list(df[S.LABEL]) == ["layer_drop_probs=[0.1, None]", "layer_drop_probs=[0.2, 0.4]"]
    # a single setting still gets a name
    assert list(frame([run(p=0.3), run(p=0.3, seed=2)])[S.LABEL]) == ["p=0.3, p_in=0"] * 2


def test_pruned_and_failed_runs_are_not_replicates():
    df = frame([run(p=0.3, seed=1, test_acc=0.9), run(p=0.3, seed=2, pruned="true", test_acc=0.5),
                run(p=0.3, seed=3, status="FAILED", test_acc=0.4), run(p=0.3, seed=4, pruned=True, test_acc=0.5),
                run(p=0.3, seed=5, status="RUNNING", test_acc=0.4), run(p=0.3, seed=6, pruned="false", test_acc=0.8),
                run(p=0.3, seed=7, pruned=pd.NA, test_acc=0.8)])
    assert list(S.completed(df)["seed"]) == ["1", "6", "7"]
    assert list(S.per_seed(df, "test_acc").index) == ["1", "6", "7"]
    summary = S.summarize(df, ["test_acc"])
    assert summary[["seeds", "pruned", "unfinished", "test_acc_n"]].iloc[0].tolist() == [3, 2, 2, 3]


def test_a_seed_run_twice_counts_once():
    df = frame([run(p=0.3, seed=1, test_acc=0.90), run(p=0.3, seed="1", test_acc=0.92), run(p=0.3, seed=2, test_acc=0.9)])
    table = S.per_seed(df, "test_acc")
    assert table.shape == (2, 1)
    assert table.iloc[0, 0] == pytest.approx(0.91)


# ---------------------------------------------------------------- intervals, tests, Holm

def test_mean_interval_and_paired_test_by_hand():
    r = S.paired_test([1, 2, 3])
    assert (r["n"], r["mean"], r["sd"]) == (3, 2, 1)
    assert T2 == pytest.approx(4.302653, abs=1e-6)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((2 - HALF_123, 2 + HALF_123))
    assert r["ci_low"] == pytest.approx(2 - 2.484138, abs=1e-6)
    assert r["t"] == pytest.approx(math.sqrt(12))
    assert r["p"] == pytest.approx(P_123) and r["p"] == pytest.approx(0.0741799, abs=1e-7)
    r = S.paired_test([2, 3, 4, 3])
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((3 - HALF_2343, 3 + HALF_2343), abs=1e-6)
    assert r["p"] == pytest.approx(P_2343)


def test_fewer_than_three_values_give_no_interval_and_no_test():
    for values in ([], [1.0], [1.0, 2.0]):
        r = S.paired_test(values)
        assert r["n"] == len(values)
        assert all(math.isnan(r[k]) for k in ("ci_low", "ci_high", "t", "p"))
    assert S.paired_test([1.0, 2.0])["mean"] == 1.5
    assert S.verdict(2, 5.0, math.nan, math.nan, math.nan) == S.TOO_FEW


def test_identical_differences():
    assert S.paired_test([0, 0, 0])["p"] == 1.0
    r = S.paired_test([1, 1, 1])
    assert (r["p"], r["ci_low"], r["ci_high"]) == (0.0, 1.0, 1.0)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert S.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = S.holm([0.01, float("nan"), 0.04])  # untested comparisons are not counted: x2, x1
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)


def test_verdict_rule():
    assert S.verdict(5, 0.3, 0.1, 0.5, 0.04) == S.HIGHER
    assert S.verdict(5, -0.3, -0.5, -0.1, 0.04) == S.LOWER
    assert S.verdict(5, 0.3, 0.1, 0.5, 0.06) == S.NOT_DISTINGUISHABLE   # Holm does not reject
    assert S.verdict(5, 0.3, -0.1, 0.5, 0.04) == S.NOT_DISTINGUISHABLE  # interval holds 0


# ---------------------------------------------------------------- paired comparisons on runs

def sweep_frame():
    """Baseline p=0 on seeds 1-4; p=0.5 on seeds 1-3 (+ a pruned seed 4): diffs [1, 2, 3] points;
    p=0.2 on seeds 1-4: diffs [2, 3, 4, 3] points; p=0.8 on 2 seeds."""
    base = {1: 0.90, 2: 0.91, 3: 0.92, 4: 0.93}
    rows = [run(p=0.0, seed=s, test_acc=v, val_acc=v, gap=0.05) for s, v in base.items()]
    rows += [run(p=0.5, seed=s, test_acc=base[s] + d / 100, val_acc=base[s], gap=0.04)
             for s, d in {1: 1, 2: 2, 3: 3}.items()]
    rows += [run(p=0.5, seed=4, pruned="true", test_acc=0.5, val_acc=0.5, gap=0.0)]
    rows += [run(p=0.2, seed=s, test_acc=base[s] + d / 100, val_acc=base[s], gap=0.05)
             for s, d in {1: 2, 2: 3, 3: 4, 4: 3}.items()]
    rows += [run(p=0.8, seed=s, test_acc=base[s], val_acc=base[s], gap=0.05) for s in (1, 2)]
    return frame(rows)


def test_baselines_differ_only_in_dropout():
    df = frame([run(p=0.0), run(p=0.5), run(p=0.0, lr="0.01"), run(p=0.5, lr="0.01"), run(p=0.5, precision="bf16"),
                run(p=0.3, layers=[0.0, 0.0])])
    key = dict(zip(df.index, df[S.SETTING]))
    base = S.find_baselines(df)
    assert base == {key[1]: key[0], key[3]: key[2]}  # bf16 has no p=0 twin; layers [0, 0] is itself dropout-free
    assert S.dropout_free(S.setting_params(key[5]))


def test_constant_capacity_settings_pair_with_their_own_p0_whatever_width_they_were_built_with():
    """The widths a run logs (layerN_width) follow from hidden_sizes, constant_capacity and the rates, so they
    are not part of a setting: p = 0.5 at constant capacity (1,024 wide) is compared with p = 0 at constant
    capacity (512 wide, the same network as p = 0 without it)."""
    def cc(p, on, width, seed=1):
        return {**run(p=p, seed=seed), "model.constant_capacity": str(on), "layer1_width": str(width),
                "layer2_width": str(width)}
    rows = [cc(0.0, False, 512), cc(0.5, False, 512), cc(0.0, True, 512), cc(0.5, True, 1024)]
    df = S.add_setting_column(pd.DataFrame(rows), [*PARAMS, "model.constant_capacity", "layer1_width", "layer2_width"])
    key = dict(zip(df.index, df[S.SETTING]))
    assert df[S.SETTING].nunique() == 4 and "layer1_width" not in S.setting_params(key[3])
    assert S.find_baselines(df) == {key[1]: key[0], key[3]: key[2]}
    assert list(df[S.LABEL]) == ["p=0, model.constant_capacity=False", "p=0.5, model.constant_capacity=False",
                                 "p=0, model.constant_capacity=True", "p=0.5, model.constant_capacity=True"]


def test_compare_to_baseline_pairs_by_seed_and_corrects_with_holm():
    df = sweep_frame()
    table = S.compare_to_baseline(df, ["test_acc"])
    by = table.set_index("label")
    assert list(table["label"]) == ["p=0.2", "p=0.5", "p=0.8"]
    half = by.loc["p=0.5"]
    assert half["seeds"] == ("1", "2", "3")   # seed 4 is pruned on the p=0.5 side: dropped from the pairing
    assert half["n"] == 3
    assert half["mean_diff"] * 100 == pytest.approx(2)
    assert half["sd_diff"] * 100 == pytest.approx(1)
    assert (half["ci_low"] * 100, half["ci_high"] * 100) == pytest.approx((2 - HALF_123, 2 + HALF_123))
    assert half["p"] == pytest.approx(P_123)
    two = by.loc["p=0.2"]
    assert two["p"] == pytest.approx(P_2343)
    # Holm over the 2 tested comparisons (p=0.8 has 2 seeds, untested): 2*P_2343, then max(P_123, 2*P_2343)
    assert two["p_holm"] == pytest.approx(2 * P_2343)
    assert half["p_holm"] == pytest.approx(P_123)
    assert (two["verdict"], half["verdict"], by.loc["p=0.8", "verdict"]) == (S.HIGHER, S.NOT_DISTINGUISHABLE, S.TOO_FEW)
    assert math.isnan(by.loc["p=0.8", "p_holm"]) and set(table["n_tests"]) == {2}


def test_explicit_baseline_by_label():
    df = sweep_frame()
    table = S.compare_to_baseline(df, ["test_acc", "gap"], baseline="p=0.5")
    assert set(table["baseline_label"]) == {"p=0.5"}
    assert len(table) == 6 and list(table["metric"]) == ["test_acc"] * 3 + ["gap"] * 3
    with pytest.raises(ValueError, match="not a setting key or label"):
        S.compare_to_baseline(df, ["test_acc"], baseline="p=0.9")


def test_sentences_use_the_table_numbers():
    table = S.compare_to_baseline(sweep_frame(), ["test_acc"])
    lines = S.comparison_sentences(table)
    # p=0.2: mean 3, CI 3 -/+ 1.299 -> [+1.70, +4.30], Holm p = 2 * 0.0052079 = 0.0104
    assert lines[0] == ("p=0.2 vs p=0: test accuracy +3.00 points (95 % CI [+1.70, +4.30], n=4 seeds, "
                        "Holm-adjusted p=0.0104): higher.")
    assert lines[1] == ("p=0.5 vs p=0: test accuracy +2.00 points (95 % CI [-0.48, +4.48], n=3 seeds, "
                        "Holm-adjusted p=0.0742): not distinguishable.")
    assert lines[2] == "p=0.8 vs p=0: too few paired seeds (2) for a test accuracy interval."


def test_not_distinguishable_after_correction_says_so():
    row = {"label": "p=0.5", "baseline_label": "p=0", "metric": "gap", "verdict": S.NOT_DISTINGUISHABLE, "n": 5,
           "mean_diff": -0.004, "ci_low": -0.007, "ci_high": -0.001, "p_holm": 0.08, "n_tests": 4,
           "confidence": 0.95}
    assert S.comparison_sentence(row) == ("p=0.5 vs p=0: gap (train - test) -0.40 points (95 % CI [-0.70, -0.10], "
                                          "n=5 seeds, Holm-adjusted p=0.08): not distinguishable after correcting "
                                          "for 4 comparisons.")


def test_summarize_unpaired_by_hand():
    df = sweep_frame()
    s = S.summarize(df, ["val_acc"], keep=["drop_prob"]).set_index("label")
    assert list(s.index) == ["p=0", "p=0.2", "p=0.5", "p=0.8"]
    # p=0.5 val_acc over seeds 1-3: [0.90, 0.91, 0.92] -> mean 0.91, sd 0.01, half 4.302653 * 0.01 / sqrt(3)
    row = s.loc["p=0.5"]
    assert (row["seeds"], row["pruned"], row["val_acc_n"]) == (3, 1, 3)
    assert row["val_acc_mean"] == pytest.approx(0.91) and row["val_acc_sd"] == pytest.approx(0.01)
    assert row["val_acc_ci_high"] - 0.91 == pytest.approx(T2 * 0.01 / math.sqrt(3))
    assert np.isnan(s.loc["p=0.8", "val_acc_ci_low"]) and s.loc["p=0.8", "val_acc_n"] == 2
    assert s.loc["p=0.8", "drop_prob"] == "0.8"


# ---------------------------------------------------------------- ranking with ties

def ranking_frame():
    """val_acc on seeds 1-4. A best; B = A + [-1, -2, +1, 0] tenths of a point (not separable); C = A - about 11
    points (separable); D only seeds 1-2 (too few to separate)."""
    a = {1: 0.95, 2: 0.96, 3: 0.97, 4: 0.98}
    rows = [run(p=0.1, seed=s, val_acc=v) for s, v in a.items()]
    rows += [run(p=0.2, seed=s, val_acc=a[s] + d / 1000) for s, d in {1: -1, 2: -2, 3: 1, 4: 0}.items()]
    rows += [run(p=0.3, seed=s, val_acc=a[s] - d / 100) for s, d in {1: 10, 2: 11, 3: 12, 4: 11}.items()]
    rows += [run(p=0.4, seed=s, val_acc=a[s] - 0.01) for s in (1, 2)]
    return frame(rows)


def test_rank_marks_ties_with_the_top():
    r = S.rank(ranking_frame(), "val_acc").set_index("label")
    assert list(r.index) == ["p=0.1", "p=0.2", "p=0.4", "p=0.3"]
    assert r["tied"].to_dict() == {"p=0.1": True, "p=0.2": True, "p=0.4": True, "p=0.3": False}
    assert r.loc["p=0.2", "verdict"] == S.NOT_DISTINGUISHABLE and r.loc["p=0.4", "verdict"] == S.TOO_FEW
    assert r.loc["p=0.3", "verdict"] == S.LOWER
    assert r.loc["p=0.3", "mean_diff"] * 100 == pytest.approx(-11)
    assert S.ranking_sentence(r.reset_index()) == ("Best by validation accuracy: tied between p=0.1, p=0.2, p=0.4 "
                                                   "(cannot be separated with 2-4 paired seeds).")


def test_rank_single_best_and_losses():
    df = ranking_frame()
    df = df[df[S.LABEL].isin(["p=0.1", "p=0.3"])]
    r = S.rank(df, "val_acc")
    assert list(r["tied"]) == [True, False]
    assert r["p_holm"].iloc[1] < 0.001
    assert S.ranking_sentence(r) == ("Best by validation accuracy: p=0.1 (96.50 %, n=4 seeds); every other setting "
                                     "is distinguishably worse (Holm-adjusted p<0.001).")
    # a loss is better lower: the same numbers as val_loss put p=0.3 first
    r = S.rank(df.rename(columns={"val_acc": "val_loss"}), "val_loss")
    assert list(r["label"]) == ["p=0.3", "p=0.1"] and r["verdict"].iloc[1] == S.HIGHER and not r["tied"].iloc[1]


@pytest.mark.parametrize("metric", ["test_acc", "test_loss", "gap", "best_gap"])
def test_rank_refuses_test_metrics(metric):
    with pytest.raises(ValueError, match="validation metric"):
        S.rank(ranking_frame(), metric)


def test_rank_accepts_val_gap():
    df = ranking_frame().assign(val_gap=lambda d: 1 - d.val_acc)
    assert S.rank(df, "val_gap")["label"].iloc[0] == "p=0.1"


def test_a_setting_without_dropout_keys_is_never_a_baseline():
    # runs that logged no dropout keys (a job that failed before its run began) must not stop the summary
    df = pd.DataFrame({"optimizer.lr": ["0.001", "0.01"], "seed": ["1", "1"], "status": ["FINISHED", "FAILED"],
                       "pruned": [False, False]})
    df = S.add_setting_column(df, ["optimizer.lr"])
    assert S.find_baselines(df) == {}
