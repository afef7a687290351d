"""sweep.analysis.stats against hand-computed values: settings, replicates, paired intervals, Holm, ties, sentences."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sweep.analysis import stats as S

# Hand values used below.
# diffs [1, 2, 3]: mean 2, sd 1, se 1/sqrt(3) = 0.577350; t(0.975, 2 df) solves t/sqrt(2 + t^2) = 0.95, i.e.
# t^2 = 2 * 0.95^2 / (1 - 0.95^2) = 18.51282 -> t = 4.302653; half-width 4.302653 * 0.577350 = 2.484138.
# t statistic 2 / 0.577350 = sqrt(12); with 2 df the two-sided p is 1 - t/sqrt(2 + t^2) = 1 - sqrt(12/14).
T2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))
HALF_123 = T2 / math.sqrt(3)
P_123 = 1 - math.sqrt(12 / 14)  # 0.0741799
# diffs [2, 3, 4, 3]: mean 3, sd sqrt(2/3), se sqrt(2/3)/2 = 0.408248, t = 3/0.408248 = sqrt(54) = 7.348469;
# with 3 df the two-sided p is 1 - (2/pi)(th + sin th cos th), th = atan(t/sqrt(3)) (Student's closed form);
# t(0.975, 3 df) = 3.182446 (printed t tables).
T_2343 = math.sqrt(54)
TH = math.atan(T_2343 / math.sqrt(3))
P_2343 = 1 - (2 / math.pi) * (TH + math.sin(TH) * math.cos(TH))  # 0.0052079
HALF_2343 = 3.182446 * math.sqrt(2 / 3) / 2

PARAMS = [
    "drop_prob",
    "input_drop_prob",
    "layer_drop_probs",
    "layer1_drop_prob",
    "layer2_drop_prob",
    "optimizer.lr",
    "trainer.precision",
    "trainer.epochs",
    "data.train_subset",
    "tracking.uri",
    "trainer.threads",
    "trainer.progress",
    "seed",
]


def run(p=0.0, seed=1, status="FINISHED", pruned=None, lr="0.001", precision="fp32", layers=None, **metrics):
    """One run as MLflow hands it over: params as strings, metrics as floats."""
    layers = layers or [None, None]
    eff = [p if x is None else x for x in layers]
    return {
        "drop_prob": str(p),
        "input_drop_prob": "0.0",
        "layer_drop_probs": str(layers),
        "layer1_drop_prob": str(eff[0]),
        "layer2_drop_prob": str(eff[1]),
        "optimizer.lr": lr,
        "trainer.precision": precision,
        "trainer.epochs": "15",
        "data.train_subset": "None",
        "tracking.uri": "sqlite:///x.db",
        "trainer.threads": "None",
        "trainer.progress": "True",
        "seed": str(seed),
        "status": status,
        "pruned": pruned,
        **metrics,
    }


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
    assert S.setting_key(
        {"drop_prob": "0.3", "seed": "1", "tracking.uri": "a", "trainer.device": "cpu"}
    ) == S.setting_key({"drop_prob": 0.3, "seed": 9, "tracking.uri": "b", "trainer.device": "auto"})
    # oneDNN or BLAS sums the same products: one setting, also with runs logged before the key existed
    assert (
        S.setting_key({"drop_prob": 0.3, "trainer.cpu_matmul": "blas"})
        == S.setting_key({"drop_prob": 0.3, "trainer.cpu_matmul": "auto"})
        == S.setting_key({"drop_prob": 0.3})
    )
    assert S.setting_key({"drop_prob": 0.3, "trainer.epochs": 15}) != S.setting_key(
        {"drop_prob": 0.3, "trainer.epochs": 60}
    )


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
    df = frame(
        [
            run(p=0.3, seed=1, test_acc=0.9),
            run(p=0.3, seed=2, pruned="true", test_acc=0.5),
            run(p=0.3, seed=3, status="FAILED", test_acc=0.4),
            run(p=0.3, seed=4, pruned=True, test_acc=0.5),
            run(p=0.3, seed=5, status="RUNNING", test_acc=0.4),
            run(p=0.3, seed=6, pruned="false", test_acc=0.8),
            run(p=0.3, seed=7, pruned=pd.NA, test_acc=0.8),
        ]
    )
    assert list(S.completed(df)["seed"]) == ["1", "6", "7"]
    assert list(S.per_seed(df, "test_acc").index) == ["1", "6", "7"]
    summary = S.summarize(df, ["test_acc"])
    assert summary[["seeds", "pruned", "unfinished", "test_acc_n"]].iloc[0].tolist() == [3, 2, 2, 3]


def test_a_seed_run_twice_counts_once():
    df = frame(
        [run(p=0.3, seed=1, test_acc=0.90), run(p=0.3, seed="1", test_acc=0.92), run(p=0.3, seed=2, test_acc=0.9)]
    )
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
    d = [0.3, -0.1, 0.25, 0.4, 0.05]
    res = stats.ttest_1samp(d, 0.0)
    assert (S.paired_test(d)["t"], S.paired_test(d)["p"]) == pytest.approx((res.statistic, res.pvalue))


def test_fewer_than_three_values_give_no_interval_and_no_test():
    for values in ([], [1.0], [1.0, 2.0]):
        r = S.paired_test(values)
        assert r["n"] == len(values)
        assert all(math.isnan(r[k]) for k in ("ci_low", "ci_high", "t", "p"))
    assert S.paired_test([1.0, 2.0])["mean"] == 1.5
    assert S.verdict(2, math.nan, math.nan, 0.5) == S.INCONCLUSIVE


def test_identical_differences():
    assert S.paired_test([0, 0, 0])["p"] == 1.0
    r = S.paired_test([1, 1, 1])
    assert (r["p"], r["ci_low"], r["ci_high"]) == (0.0, 1.0, 1.0)


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for _ in range(10):
        p = rng.uniform(0, 0.2, rng.integers(1, 9)) ** rng.uniform(0.5, 3)
        assert S.holm(p) == pytest.approx(multipletests(p, method="holm")[1])


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert S.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = S.holm([0.01, float("nan"), 0.04])  # untested comparisons are not counted: x2, x1
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)


def test_verdict_rule():
    """Equivalence first, at the family's level: inside +/- the smallest effect of interest -> equivalent; else the
    step-level interval excluding 0 -> its side; else, or with fewer than 3 pairs, inconclusive."""
    assert S.verdict(5, 0.1, 0.5, 0.3) == S.HIGHER
    assert S.verdict(5, -0.5, -0.1, 0.3) == S.LOWER
    assert S.verdict(5, 0.01, 0.2, 0.3) == S.EQUIVALENT  # excludes 0, but too small to matter
    assert S.verdict(5, 0.01, 0.2, 0.3, -0.02, 0.31) == S.HIGHER  # the family-level interval reaches past 0.3
    assert S.verdict(5, -0.2, 0.25, 0.3) == S.EQUIVALENT  # holds 0, inside +/-0.3
    assert S.verdict(5, -0.2, 0.35, 0.3) == S.INCONCLUSIVE  # holds 0, reaches beyond +0.3
    assert S.verdict(5, -0.2, 0.25, None) == S.INCONCLUSIVE  # no smallest effect set: never equivalent
    assert S.verdict(5, 0.01, 0.2, None) == S.HIGHER
    assert S.verdict(2, -0.01, 0.01, 0.3) == S.INCONCLUSIVE  # too few pairs
    assert set(S.VERDICT_WORDS) == {"higher", "lower", "equivalent", "inconclusive"}


# ---------------------------------------------------------------- paired comparisons on runs


def sweep_frame():
    """Baseline p=0 on seeds 1-4; p=0.5 on seeds 1-3 (+ a pruned seed 4): diffs [1, 2, 3] points;
    p=0.2 on seeds 1-4: diffs [2, 3, 4, 3] points; p=0.8 on 2 seeds."""
    base = {1: 0.90, 2: 0.91, 3: 0.92, 4: 0.93}
    rows = [run(p=0.0, seed=s, test_acc=v, val_acc=v, gap=0.05) for s, v in base.items()]
    rows += [
        run(p=0.5, seed=s, test_acc=base[s] + d / 100, val_acc=base[s], gap=0.04) for s, d in {1: 1, 2: 2, 3: 3}.items()
    ]
    rows += [run(p=0.5, seed=4, pruned="true", test_acc=0.5, val_acc=0.5, gap=0.0)]
    rows += [
        run(p=0.2, seed=s, test_acc=base[s] + d / 100, val_acc=base[s], gap=0.05)
        for s, d in {1: 2, 2: 3, 3: 4, 4: 3}.items()
    ]
    rows += [run(p=0.8, seed=s, test_acc=base[s], val_acc=base[s], gap=0.05) for s in (1, 2)]
    return frame(rows)


def test_baselines_differ_only_in_dropout():
    df = frame(
        [
            run(p=0.0),
            run(p=0.5),
            run(p=0.0, lr="0.01"),
            run(p=0.5, lr="0.01"),
            run(p=0.5, precision="bf16"),
            run(p=0.3, layers=[0.0, 0.0]),
        ]
    )
    key = dict(zip(df.index, df[S.SETTING]))
    base = S.find_baselines(df)
    assert base == {key[1]: key[0], key[3]: key[2]}  # bf16 has no p=0 twin; layers [0, 0] is itself dropout-free
    assert S.dropout_free(S.setting_params(key[5]))


def test_constant_capacity_settings_pair_with_their_own_p0_whatever_width_they_were_built_with():
    """The widths a run logs (layerN_width) follow from hidden_sizes, constant_capacity and the rates, so they
    are not part of a setting: p = 0.5 at constant capacity (1,024 wide) is compared with p = 0 at constant
    capacity (512 wide, the same network as p = 0 without it)."""

    def cc(p, on, width, seed=1):
        return {
            **run(p=p, seed=seed),
            "model.constant_capacity": str(on),
            "layer1_width": str(width),
            "layer2_width": str(width),
        }

    rows = [cc(0.0, False, 512), cc(0.5, False, 512), cc(0.0, True, 512), cc(0.5, True, 1024)]
    df = S.add_setting_column(pd.DataFrame(rows), [*PARAMS, "model.constant_capacity", "layer1_width", "layer2_width"])
    key = dict(zip(df.index, df[S.SETTING]))
    assert df[S.SETTING].nunique() == 4 and "layer1_width" not in S.setting_params(key[3])
    assert S.find_baselines(df) == {key[1]: key[0], key[3]: key[2]}
    assert list(df[S.LABEL]) == [
        "p=0, model.constant_capacity=False",
        "p=0.5, model.constant_capacity=False",
        "p=0, model.constant_capacity=True",
        "p=0.5, model.constant_capacity=True",
    ]


# t(1 - 0.025/2, 2 df) = t(0.9875, 2): 2 df closed form again, t / sqrt(2 + t^2) = 0.975
T2_9875 = math.sqrt(2 * 0.975**2 / (1 - 0.975**2))  # 6.205347


def test_compare_to_baseline_pairs_by_seed_and_corrects_with_holm():
    df = sweep_frame()
    table = S.compare_to_baseline(df, ["test_acc"])
    by = table.set_index("label")
    assert list(table["label"]) == ["p=0.2", "p=0.5", "p=0.8"]
    half = by.loc["p=0.5"]
    assert half["seeds"] == ("1", "2", "3")  # seed 4 is pruned on the p=0.5 side: dropped from the pairing
    assert half["n"] == 3
    assert half["mean_diff"] * 100 == pytest.approx(2)
    assert half["sd_diff"] * 100 == pytest.approx(1)
    assert half["d_z"] == pytest.approx(2)  # mean / sd of the differences
    assert half["p"] == pytest.approx(P_123)
    two = by.loc["p=0.2"]
    assert two["p"] == pytest.approx(P_2343)
    # Holm over the 2 tested comparisons (p=0.8 has 2 seeds, untested): 2*P_2343, then max(P_123, 2*P_2343)
    assert two["p_holm"] == pytest.approx(2 * P_2343)
    assert half["p_holm"] == pytest.approx(P_123)
    # step levels: p=0.2 (smallest p) at 0.05/2 and rejected; p=0.5 not rejected, so at 0.05/2 as well
    assert (two["level"], half["level"]) == pytest.approx((0.025, 0.025))
    assert half["confidence"] == pytest.approx(0.975)
    assert (half["ci_low"] * 100, half["ci_high"] * 100) == pytest.approx(
        (2 - T2_9875 / math.sqrt(3), 2 + T2_9875 / math.sqrt(3))
    )
    t3 = stats.t.ppf(1 - 0.025 / 2, 3)  # 4.176535 (scipy; no closed form at 3 df)
    assert t3 == pytest.approx(4.176535, abs=1e-6)
    assert (two["ci_low"] * 100, two["ci_high"] * 100) == pytest.approx(
        (3 - t3 * math.sqrt(2 / 3) / 2, 3 + t3 * math.sqrt(2 / 3) / 2)
    )
    assert (two["verdict"], half["verdict"], by.loc["p=0.8", "verdict"]) == (S.HIGHER, S.INCONCLUSIVE, S.INCONCLUSIVE)
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
    # p=0.2: mean 3, 97.5 % half-width 4.176535 * sqrt(2/3) / 2 = 1.705 -> [+1.29, +4.71]; d_z = 3 / sqrt(2/3)
    # it detects 2.22 points with 80 % power: the effect at which a paired t-test at 0.05/2 with 4 pairs of sd
    # sqrt(2/3) points has power 0.8 (statsmodels solves the same: effect size 2.22 / 0.8165 = 2.716)
    assert lines[0] == (
        "p=0.2 vs p=0: test accuracy +3.00 points (97.5 % CI [+1.29, +4.71] at its Holm step level, "
        "n=4 replicates, d_z=+3.67, detects 2.22 points with 80% power): higher, the interval "
        "excludes 0."
    )
    from statsmodels.stats.power import TTestPower

    d = TTestPower().solve_power(nobs=4, alpha=0.025, power=0.8, alternative="two-sided")
    assert table.loc[0, "mde"] == pytest.approx(d * math.sqrt(2 / 3) / 100, rel=1e-4)
    # p=0.5: mean 2, half-width 6.205347 / sqrt(3) = 3.583 -> [-1.58, +5.58]: holds 0, beyond the +/-0.3 margin
    assert lines[1] == (
        "p=0.5 vs p=0: test accuracy +2.00 points (97.5 % CI [-1.58, +5.58] at its Holm step level, "
        "n=3 replicates, d_z=+2.00, detects 4.62 points with 80% power): inconclusive, the interval "
        "holds 0 and reaches beyond ±0.30 points."
    )
    assert lines[2] == "p=0.8 vs p=0: test accuracy: inconclusive (2 paired replicates; a test needs 3)."


def test_equivalent_says_when_it_also_excludes_0():
    row = {
        "label": "p=0.5",
        "baseline_label": "p=0",
        "metric": "gap",
        "verdict": S.EQUIVALENT,
        "n": 20,
        "mean_diff": 0.0004,
        "ci_low": -0.0011,
        "ci_high": 0.0019,
        "confidence": 0.99,
        "d_z": 0.12,
        "margin": 0.003,
    }
    assert S.comparison_sentence(row) == (
        "p=0.5 vs p=0: gap (train - test) +0.04 points (99 % CI [-0.11, +0.19] "
        "at the family level, n=20 replicates, d_z=+0.12): equivalent, the "
        "interval lies inside ±0.30 points, the smallest effect of interest."
    )
    row.update(mean_diff=0.0015, ci_low=0.0002, ci_high=0.0028)
    assert S.comparison_sentence(row).endswith(
        "equivalent, the interval lies inside ±0.30 points, the smallest "
        "effect of interest; it also excludes 0: a real difference, but a "
        "smaller one."
    )


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


def test_rank_marks_ties_with_the_top_and_leaves_too_few_replicates_unranked():
    r = S.rank(ranking_frame(), "val_acc").set_index("label")
    assert list(r.index) == ["p=0.1", "p=0.2", "p=0.3", "p=0.4"]  # p=0.4 (2 replicates) last, unranked
    assert r["rank"].iloc[:3].tolist() == [1, 2, 3] and math.isnan(r.loc["p=0.4", "rank"])
    assert r["tied"].to_dict() == {"p=0.1": True, "p=0.2": True, "p=0.3": False, "p=0.4": False}
    assert r.loc["p=0.2", "verdict"] == S.INCONCLUSIVE and r.loc["p=0.4", "verdict"] == "not ranked"
    assert r.loc["p=0.3", "verdict"] == S.LOWER and not r.loc["p=0.4", "ranked"]
    assert r.loc["p=0.3", "mean_diff"] * 100 == pytest.approx(-11)
    said = S.ranking_sentence(r.reset_index())
    assert said.startswith(
        "Best by validation accuracy: tied between p=0.1 (best), p=0.2 (inconclusive), which 4 "
        "paired replicates cannot separate from the best (96.50 %); the next by mean, p=0.3, is "
        "lower than the best (97.5 % CI ["
    )
    assert said.endswith("Not ranked (1, fewer than 3 replicates): p=0.4."), said


def test_a_tie_never_reaches_past_a_setting_that_is_not_tied():
    """B is separable from the top; C, below B by mean, has one noisy replicate that keeps its interval across 0:
    C is still not tied (a tied setting is never below one that is not)."""
    a = {1: 0.95, 2: 0.96, 3: 0.97, 4: 0.98}
    rows = [run(p=0.1, seed=s, val_acc=v) for s, v in a.items()]
    rows += [run(p=0.2, seed=s, val_acc=a[s] - 0.02 - d / 1000) for s, d in {1: 1, 2: 2, 3: 1, 4: 2}.items()]
    rows += [run(p=0.3, seed=s, val_acc=a[s] + d) for s, d in {1: -0.20, 2: 0.05, 3: -0.05, 4: 0.04}.items()]
    r = S.rank(frame(rows), "val_acc").set_index("label")
    assert list(r.index) == ["p=0.1", "p=0.2", "p=0.3"]
    assert r.loc["p=0.2", "verdict"] == S.LOWER and r.loc["p=0.3", "verdict"] == S.INCONCLUSIVE
    assert r["tied"].to_dict() == {"p=0.1": True, "p=0.2": False, "p=0.3": False}


def test_nothing_is_ranked_below_three_replicates():
    rows = [run(p=0.0, seed=1, val_acc=0.71), run(p=0.5, seed=1, val_acc=0.88)]
    r = S.rank(frame(rows), "val_acc")
    assert not r["ranked"].any() and not r["tied"].any()
    assert S.ranking_sentence(r) == (
        "Best: not chosen; no setting has 3 replicates yet (the most is 1), and fewer "
        "cannot be ranked: run each setting with at least 3 seeds (seed=1,2,3)."
    )


def test_rank_single_best_and_losses():
    df = ranking_frame()
    df = df[df[S.LABEL].isin(["p=0.1", "p=0.3"])]
    r = S.rank(df, "val_acc")
    assert list(r["tied"]) == [True, False]
    assert r["p_holm"].iloc[1] < 0.001
    assert S.ranking_sentence(r).startswith(
        "Best by validation accuracy: p=0.1 (96.50 %, n=4 replicates); the next "
        "by mean, p=0.3, is lower than the best (95 % CI [-12.30, -9.70])."
    )
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
    df = pd.DataFrame(
        {
            "optimizer.lr": ["0.001", "0.01"],
            "seed": ["1", "1"],
            "status": ["FINISHED", "FAILED"],
            "pruned": [False, False],
        }
    )
    df = S.add_setting_column(df, ["optimizer.lr"])
    assert S.find_baselines(df) == {}


# ---------------------------------------------------------------- equivalence, Holm levels, power and design


def test_tost_against_statsmodels_and_by_hand():
    from statsmodels.stats.weightstats import ttost_paired

    d = np.array([0.1, -0.2, 0.05, 0.15, -0.05, 0.0])
    # by hand: mean 0.00833, sd 0.12416, se 0.050689; (mean + 0.3)/se = 6.0829 and (mean - 0.3)/se = -5.7541 on 5 df
    mean, se = d.mean(), d.std(ddof=1) / math.sqrt(6)
    assert S.tost_p(d, 0.3) == pytest.approx(max(stats.t.sf((mean + 0.3) / se, 5), stats.t.cdf((mean - 0.3) / se, 5)))
    p_sm = ttost_paired(d, np.zeros_like(d), -0.3, 0.3)[0]
    assert S.tost_p(d, 0.3) == pytest.approx(p_sm)
    assert S.tost_p(d, 0.01) > 0.4 and math.isnan(S.tost_p(d[:2], 0.3)) and math.isnan(S.tost_p(d, None))
    assert (S.tost_p([0.125] * 3, 0.3), S.tost_p([0.5] * 3, 0.3)) == (0.0, 1.0)  # sd 0


def test_holm_levels_by_hand_and_the_interval_agrees_with_holm():
    # p sorted 0.001, 0.02, 0.03: steps 0.05/3, 0.05/2 (0.02 <= 0.025: rejected), 0.05/1 (0.03: rejected)
    assert S.holm_levels([0.02, 0.001, 0.03]) == pytest.approx([0.025, 0.05 / 3, 0.05])
    # 0.001 rejected at 0.05/3; 0.03 > 0.025 stops the procedure: it and 0.04 are at 0.05/3 (Bonferroni)
    assert S.holm_levels([0.04, 0.001, 0.03]) == pytest.approx([0.05 / 3] * 3)
    out = S.holm_levels([0.01, float("nan"), 0.04])
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.025) and out[2] == pytest.approx(0.05)
    rng = np.random.default_rng(1)
    for _ in range(500):  # p <= its level exactly when Holm rejects it
        p = rng.uniform(0, 0.08, rng.integers(1, 7))
        assert list(p <= S.holm_levels(p)) == list(S.holm(p) <= 0.05)


def test_equivalence_uses_the_bonferroni_level_of_the_family():
    """Two comparisons, neither different from 0: each interval is at 1 - 0.05/2; equivalent when inside the
    margin, and p_equiv = min(1, 2m * p_tost) <= 0.05 says the same."""
    base = {s: 0.90 + s / 1000 for s in range(1, 9)}
    tiny = [0.0002, -0.0003, 0.0001, 0.0, -0.0001, 0.0003, -0.0002, 0.0001]
    wide = [0.004, -0.005, 0.003, -0.004, 0.005, -0.003, 0.004, -0.005]
    rows = [run(p=0.0, seed=s, test_acc=v) for s, v in base.items()]
    rows += [run(p=0.2, seed=s, test_acc=base[s] + d) for s, d in zip(base, tiny)]
    rows += [run(p=0.5, seed=s, test_acc=base[s] + d) for s, d in zip(base, wide)]
    t = S.compare_to_baseline(frame(rows), ["test_acc"]).set_index("label")
    assert (t["level"] == 0.025).all()
    assert t.loc["p=0.2", "verdict"] == S.EQUIVALENT and t.loc["p=0.2", "p_equiv"] <= 0.05
    assert t.loc["p=0.2", "p_equiv"] == pytest.approx(min(1, 4 * S.tost_p(tiny, 0.003)))
    assert t.loc["p=0.5", "verdict"] == S.INCONCLUSIVE and t.loc["p=0.5", "p_equiv"] > 0.05
    assert t.loc["p=0.2", "margin"] == pytest.approx(0.003)  # 0.3 points, stored as a fraction
    # the smallest effect of interest is a setting: at 0.01 points p=0.2 is no longer equivalent
    t2 = S.compare_to_baseline(frame(rows), ["test_acc"], smallest_effect={"test_acc": 0.01}).set_index("label")
    assert t2.loc["p=0.2", "verdict"] == S.INCONCLUSIVE


def test_power_replicates_and_detectable_effect_against_statsmodels():
    from statsmodels.stats.power import TTestPower

    for effect, sd, n, level in ((0.3, 0.5, 20, 0.01), (0.5, 1.0, 8, 0.05), (1.0, 0.4, 3, 0.025)):
        expected = TTestPower().power(effect_size=effect / sd, nobs=n, alpha=level, alternative="two-sided")
        assert S.power(effect, sd, n, level) == pytest.approx(expected, rel=1e-6)
    # the design's n: the smallest with >= 80 % power (statsmodels solves the same equation for a real n)
    n = S.replicates_for(0.3, 0.5, 0.01)
    real = TTestPower().solve_power(effect_size=0.6, alpha=0.01, power=0.8, alternative="two-sided")
    assert n == math.ceil(real) and S.power(0.3, 0.5, n, 0.01) >= 0.8 > S.power(0.3, 0.5, n - 1, 0.01)
    assert S.replicates_for(0.3, 5.0, 0.01, cap=50) is None  # more than the cap would be needed
    mde = S.detectable_effect(0.5, 20, 0.01)
    assert S.power(mde, 0.5, 20, 0.01) == pytest.approx(0.8, abs=1e-6)
    # by hand, the normal approximation (z(0.995) + z(0.8)) * sd / sqrt(n) is a little below the t-based value
    assert (2.5758 + 0.8416) * 0.5 / math.sqrt(20) < mde < 1.1 * (2.5758 + 0.8416) * 0.5 / math.sqrt(20)
    assert S.power(0.06, 0.01, 3, 0.025) == pytest.approx(0.932, abs=1e-3)  # scipy's nct gives NaN here


def test_a_run_without_params_is_no_setting_and_breaks_nothing():
    rows = [run(p=0.0, seed=s, test_acc=0.9, val_acc=0.9) for s in (1, 2, 3)]
    rows += [run(p=0.5, seed=s, test_acc=0.91, val_acc=0.91) for s in (1, 2, 3)]
    blank = {k: None for k in rows[0]}
    df = frame(rows + [{**blank, "status": "FAILED", "pruned": None}])
    assert df[S.LABEL].iloc[-1] == S.NO_PARAMS_LABEL and df[S.SETTING].iloc[-1] == S.NO_PARAMS
    assert sorted(set(df[S.LABEL])) == sorted({"p=0", "p=0.5", S.NO_PARAMS_LABEL})  # labels name only p
    assert S.find_baselines(df) == {df[S.SETTING].iloc[3]: df[S.SETTING].iloc[0]}
    assert S.dropout_free({"drop_prob": "0", "layer_drop_probs": "None"})  # a NaN list reads as no entries
