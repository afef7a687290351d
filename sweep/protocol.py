"""The verdict protocol's words and defaults: the one home of the names that the config (which sets them), the
statistics (which apply them) and every table, report and test (which print or check them) share.

Imports nothing, so the schema, the reader and the study sweeper can all read it without pulling in each other.

- A comparison ends in one of four verdicts. `equivalent`: the paired difference lies within +/- the smallest
  effect of interest (two one-sided tests, corrected for the family). Otherwise `higher`/`lower`: it is not 0
  (Holm-adjusted test). `inconclusive`: neither can be said, including when fewer than MIN_REPLICATES pairs.
- The smallest effect of interest is stated per metric in the unit the tables print: points (1/100) for
  accuracies and gaps, epochs for the best-validation epoch, the metric's own unit for losses.
- A study has two phases: an exploratory one that designs the confirmatory one (replicates from the paired
  spread, which settings go on) and a confirmatory one on fresh replicates whose verdicts are the headline.
"""

HIGHER, LOWER, EQUIVALENT, INCONCLUSIVE = "higher", "lower", "equivalent", "inconclusive"
VERDICTS = (HIGHER, LOWER, EQUIVALENT, INCONCLUSIVE)

MIN_REPLICATES = 3  # fewer paired replicates: no interval, no test; the verdict is inconclusive
ALPHA = 0.05  # family-wise error rate of each family of comparisons (one metric's comparisons in one phase)
POWER = 0.8  # the power a study designs its confirmatory phase for, at the smallest effect of interest

# metric -> smallest effect of interest, in the unit the tables print. 0.3 points of accuracy is about the
# spread of one seed's test accuracy on the full MNIST split (README "Studies"): an effect below it would not
# change which network a practitioner picks. A metric with no entry gets no equivalence verdict.
SMALLEST_EFFECT = {
    "test_acc": 0.3,
    "val_acc": 0.3,
    "train_acc": 0.3,
    "gap": 0.3,
    "val_gap": 0.3,
    "at_best_val.test_acc": 0.3,
    "at_best_val.gap": 0.3,
    "best_epoch": 5.0,
}

EXPLORATORY, CONFIRMATORY = "exploratory", "confirmatory"
PHASES = (EXPLORATORY, CONFIRMATORY)
CONFIRM = ("all", "best")  # which comparisons a study confirms: every setting against its baseline, or the best
PHASE_PARAM = "study.phase"  # the param every run of a study logs (its config key)
PLAN_ARTIFACT = "study_plan.json"  # the frozen design, in the sweep folder and on the parent run
