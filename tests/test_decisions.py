"""Honest numbers and recall-tuned decisions: Wilson intervals, calibration error, calibration fits,
decision weights, cross-validation planning, and the served model applying them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from diagnosa.model import DiagnosaModel, apply_calibration, decide
from processing.calibration import (
    brier_score,
    calibration_summary,
    expected_calibration_error,
    honest_section,
    recall_table,
    wilson_interval,
)
from processing.decisions import calibrate_and_decide, decision_scores, fit_calibration, fit_decision_weights
from training.tuning import candidate_configs, cv_rows, oof_proba, plan_folds

# ------------------------------------------------------------------------------------------------
# Metrics


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(8, 10)  # Wilson (1927); e.g. Newcombe (1998) table I: 0.4902-0.9433
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_ece_of_a_calibrated_predictor_is_near_zero_and_of_an_overconfident_one_is_not():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(40_000, 3))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in proba])  # labels drawn from the probabilities themselves
    assert expected_calibration_error(y, proba) < 0.01
    sharp = proba ** 4 / (proba ** 4).sum(axis=1, keepdims=True)
    assert expected_calibration_error(y, sharp) > 0.1


def test_brier_score_bounds():
    y = np.array([0, 1, 2])
    assert brier_score(y, np.eye(3)) == 0.0
    assert brier_score(y, np.full((3, 3), 1 / 3)) == pytest.approx(2 / 3)
    assert brier_score(y, np.eye(3)[[1, 2, 0]]) == pytest.approx(2.0)


def test_recall_table_and_honest_section():
    y = np.array([0, 0, 0, 0, 1, 1, 2])
    plain = np.array([[0.9, 0.1, 0.0]] * 4 + [[0.6, 0.4, 0.0]] * 2 + [[0.5, 0.2, 0.3]])
    table = recall_table(y, plain.argmax(axis=1), ["a", "b", "c"])
    assert table["a"] == {"support": 4, "hits": 4, "recall": 1.0, "recall_ci95": list(wilson_interval(4, 4))}
    assert table["b"]["recall"] == 0.0 and table["c"]["support"] == 1
    weighted = decide(plain, [1.0, 2.0, 2.0])
    section = honest_section(y, plain, plain, weighted, ["a", "b", "c"], [1.0, 2.0, 2.0])
    assert section["without_decision_weights"]["worst_class_recall"]["recall"] == 0.0
    assert section["with_decision_weights"]["macro_recall"] == pytest.approx(1.0)
    assert section["calibration"]["before"]["ece"] == section["calibration"]["after"]["ece"]
    # The calibration rows score the top probability; what the endpoint answers is the weights' choice, and the
    # section says how often that is right and how often it is the top probability (a probe: 0.65 said, 0.49 true).
    assert section["calibration"]["after"]["accuracy"] == pytest.approx(4 / 7)  # argmax: the four a's
    assert section["decisions"] == {"accuracy": pytest.approx(1.0), "top_probability_agreement": pytest.approx(4 / 7)}


# ------------------------------------------------------------------------------------------------
# Calibration and decision weights


def test_temperature_recovers_an_overconfident_model():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1.5, size=(5_000, 4))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(4, p=p) for p in proba])
    sharp = proba ** 3 / (proba ** 3).sum(axis=1, keepdims=True)  # temperature 1/3 applied
    fitted = fit_calibration(sharp, y)
    assert fitted["method"] == "temperature" and fitted["bias"] is None
    assert fitted["temperature"] == pytest.approx(3.0, rel=0.1)
    calibrated = apply_calibration(sharp, fitted)
    assert (calibrated.argmax(axis=1) == sharp.argmax(axis=1)).all()  # temperature never changes the decision
    assert calibration_summary(y, calibrated)["ece"] < calibration_summary(y, sharp)["ece"] / 3
    with_bias = fit_calibration(sharp, y, method="temperature_bias")
    assert len(with_bias["bias"]) == 4 and sum(with_bias["bias"]) == pytest.approx(0.0, abs=1e-9)
    assert apply_calibration(sharp, None) is not None and np.allclose(apply_calibration(sharp, None), sharp)


def imbalanced_problem(seed: int, n_rare: int = 40):
    """Three overlapping classes, the last rare: a plain argmax of the true posteriors rarely picks it."""
    rng = np.random.default_rng(seed)
    counts = [1_000, 600, n_rare]
    y = np.repeat(np.arange(3), counts)
    x = rng.normal(np.array([0.0, 1.5, 3.0])[y], 1.0)
    prior = np.array(counts) / sum(counts)
    like = np.exp(-0.5 * (x[:, None] - np.array([0.0, 1.5, 3.0])) ** 2)
    proba = like * prior
    return proba / proba.sum(axis=1, keepdims=True), y


def test_decision_weights_raise_the_worst_class_recall_within_the_precision_bound():
    proba, y = imbalanced_problem(2)
    base = decision_scores(y, proba.argmax(axis=1), 3)
    assert base.worst_recall < 0.4  # the rare class is mostly missed by the plain argmax
    weights = fit_decision_weights(proba, y, max_precision_loss=0.2)
    tuned = decision_scores(y, decide(proba, weights), 3)
    assert tuned.worst_recall > base.worst_recall + 0.3
    assert tuned.macro_precision >= base.macro_precision - 0.2 - 1e-9
    assert np.exp(np.log(weights).mean()) == pytest.approx(1.0)
    assert weights[2] > weights[0]
    # the default bound (0.05) buys less, and holds
    default = decision_scores(y, decide(proba, fit_decision_weights(proba, y)), 3)
    assert default.macro_precision >= base.macro_precision - 0.05 - 1e-9
    assert base.worst_recall < default.worst_recall < tuned.worst_recall


def test_decision_weights_generalise_to_fresh_rows():
    proba, y = imbalanced_problem(3)
    fresh, y_fresh = imbalanced_problem(4)
    fitted = calibrate_and_decide(proba, y)
    before = decision_scores(y_fresh, fresh.argmax(axis=1), 3)
    after = decision_scores(y_fresh, decide(apply_calibration(fresh, fitted["calibration"]),
                                            fitted["decision_weights"]), 3)
    assert after.worst_recall > before.worst_recall + 0.1


def test_useless_weights_are_dropped():
    y = np.repeat([0, 1], 50)
    proba = np.eye(2)[y] * 0.8 + 0.1  # already perfect: nothing to gain
    fitted = calibrate_and_decide(proba, y)
    assert np.allclose(fitted["decision_weights"], 1.0)
    assert (fitted["cross_fitted_pred"] == y).all()


# ------------------------------------------------------------------------------------------------
# Cross-validation planning


def test_folds_adapt_to_the_smallest_class():
    y = np.repeat([0, 1, 2], [200, 150, 4])
    plan = plan_folds(y, seed=0)
    assert (plan.k, plan.repeats, plan.smallest_class) == (4, 3, 4)
    assert len(plan.folds) == 12
    for fit, score in plan.folds:
        assert not set(fit) & set(score)
        assert (y[score] == 2).sum() == 1  # stratified: each fold scores one of the four rare rows
    assert (plan_folds(np.repeat([0, 1], [500, 40])).k, plan_folds(np.repeat([0, 1], [500, 40])).repeats) == (5, 1)
    assert plan_folds(np.repeat([0, 1], [500, 400])).k == 3


def test_cv_rows_keep_small_classes_whole_and_weights_restore_the_mix():
    y = np.repeat([0, 1, 2], [9_000, 900, 30])
    rows, weight = cv_rows(y, max_rows=1_000, seed=0)
    assert len(rows) <= 1_000 and (y[rows] == 2).sum() == 30
    for c, n in ((0, 9_000), (1, 900), (2, 30)):
        assert weight[y[rows] == c].sum() == pytest.approx(n)
    assert cv_rows(y[:500], max_rows=1_000)[0].tolist() == list(range(500))


def test_candidate_configs_put_defaults_first_and_keep_given_values():
    configs = candidate_configs("logistic_regression", {"max_iter": 50}, max_configs=3)
    assert configs[0]["C"] == 1.0 and len(configs) == 3
    assert all(c["max_iter"] == 50 for c in configs)
    assert candidate_configs("svm", {"C": 2.0}, max_configs=6) == [candidate_configs("svm", {"C": 2.0})[0]]


def test_oof_probabilities_cover_every_row_and_a_class_missing_from_a_fold():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [60, 40, 1])  # the single row of class 2 is never in its own fit
    X = rng.normal(y[:, None], 0.5, size=(len(y), 2))
    plan = plan_folds(y, seed=0)
    proba = oof_proba(LogisticRegression(max_iter=500), X, y, np.ones(len(y)), plan, 3)
    assert proba.shape == (101, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert proba[y == 2, 2][0] < 0.5  # scored by fits that never saw class 2 in at least one repeat


# ------------------------------------------------------------------------------------------------
# The model applies them


def test_model_serves_calibrated_probabilities_and_decides_with_weights():
    X = pd.DataFrame({"a": [0.0, 0.1, 1.0, 1.1, 2.0, 2.1], "b": [1.0, 0.9, 0.0, 0.1, 0.5, 0.4]})
    y = np.array([0, 0, 1, 1, 2, 2])
    pipeline = Pipeline([("features", StandardScaler()), ("classifier", LogisticRegression())]).fit(X, y)
    model = DiagnosaModel(pipeline, ["x", "y", "z"], {"calibration": {"method": "temperature", "temperature": 2.0,
                                                                     "bias": None},
                                                     "decision_weights": {"x": 1.0, "y": 1.0, "z": 50.0}})
    raw = model.predict_proba_raw(X)
    served = model.predict_proba(X)
    np.testing.assert_allclose(served, apply_calibration(raw, {"temperature": 2.0}))
    assert served.max() < raw.max()  # softened
    assert model.predict(X) == ["z"] * 6 or model.predict(X).count("z") > 2
    assert DiagnosaModel(pipeline, ["x", "y", "z"]).predict(X) == ["x", "x", "y", "y", "z", "z"]


def test_weights_are_kept_only_for_a_gain_beyond_noise():
    """McNemar on the worst class's rows: b found only with the weights, c only without; b - c > 2 sqrt(b + c)."""
    from processing.decisions import weights_pay_off

    y = np.repeat([0, 1, 2], [400, 400, 100])
    plain = y.copy()
    plain[800:830] = 0  # the worst class (2): 70 of 100 found

    def crossed(fixed, broken, others_lost=0):
        out = plain.copy()
        out[800:800 + fixed] = 2  # missed by the plain argmax, found with the weights
        out[830:830 + broken] = 1  # found by the plain argmax, lost with the weights
        out[:others_lost] = 1
        return out

    assert weights_pay_off(y, plain, crossed(8, 0), 3)  # 8 > 2 * sqrt(8): a small but one-sided change
    assert not weights_pay_off(y, plain, crossed(12, 6), 3)  # +6 rows, 18 changed: 6 < 2 * sqrt(18)
    assert weights_pay_off(y, plain, crossed(20, 2), 3)
    assert not weights_pay_off(y, plain, crossed(20, 2, others_lost=100), 3)  # worst class +0.18, class 0 -0.25
    assert not weights_pay_off(y, plain, plain, 3)  # nothing changes: nothing to keep


def test_ece_of_given_decisions_uses_the_probability_of_each_decision():
    from processing.calibration import expected_calibration_error

    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    assert expected_calibration_error(y, proba, predicted=proba.argmax(axis=1)) == expected_calibration_error(y, proba)
    # deciding 1 everywhere: confidences 0.1, 0.4, 0.7, 0.2 against correctness 0, 1, 1, 0
    assert expected_calibration_error(y, proba, bins=10, predicted=np.ones(4, dtype=int)) == pytest.approx(
        (0.1 + 0.6 + 0.3 + 0.2) / 4)


def test_weights_look_after_each_class_inside_each_group():
    """Class 1 is found 90% of the time overall but only half the time inside the slice (group 1): with the
    groups the weights lift the slice's cell; without them the overall class looks fine and nothing moves."""
    from processing.decisions import cells, worst_cell

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], [600, 400])
    group = np.zeros(1000, dtype=int)
    group[900:] = 1  # 100 rows of class 1 in the slice
    p1 = np.where(y == 1, rng.uniform(0.55, 0.95, 1000), rng.uniform(0.0, 0.3, 1000))
    p1[900:] = rng.uniform(0.3, 0.7, 100)  # the slice's class-1 rows sit on the boundary
    proba = np.column_stack([1 - p1, p1])
    plain = proba.argmax(axis=1)
    masks = cells(y, group, 2)
    assert len(masks) == 4  # class 0, class 1, class 1 outside and inside the slice (class 0 is all outside)
    assert worst_cell(y, plain, masks)[1] == 3
    with_groups = fit_decision_weights(proba, y, groups=group, max_precision_loss=0.2)
    lifted = decide(proba, with_groups)
    assert np.mean(lifted[900:] == 1) > np.mean(plain[900:] == 1) + 0.2
    assert worst_cell(y, lifted, masks)[0] > worst_cell(y, plain, masks)[0]
    # A cell under MIN_CELL_ROWS rows is not its own cell: too few rows to steer the weights.
    small = cells(y, np.r_[np.zeros(990, int), np.ones(10, int)], 2)
    assert len(small) == 3 and min(m.sum() for m in small) == 390  # the 10-row cell is left out
    with pytest.raises(ValueError, match="one entry per row"):
        cells(y, group[:10], 2)


def _reference_weights(proba, y, w, groups, max_precision_loss=0.05):
    """The coordinate search spelled out: argmax(log p + log w) and every cell's mask, for every trial."""
    from processing.decisions import LOG_WEIGHT_GRID, MAX_ROUNDS, cells, decision_scores, worst_cell

    k = proba.shape[1]
    logp = np.log(np.clip(proba, 1e-12, 1.0))
    masks = cells(y, groups, k)
    floor = decision_scores(y, logp.argmax(axis=1), k, w).macro_precision - max_precision_loss - 1e-12

    def key(log_w):
        pred = (logp + log_w).argmax(axis=1)
        s = decision_scores(y, pred, k, w)
        return None if s.macro_precision < floor else (round(worst_cell(y, pred, masks)[0], 12),
                                                          round(s.macro_recall, 12))

    log_w, best = np.zeros(k), key(np.zeros(k))
    for _ in range(MAX_ROUNDS):
        improved = False
        for j in range(k):
            found = [(score, -abs(v), v) for v in LOG_WEIGHT_GRID
                     if (score := key(np.where(np.arange(k) == j, v, log_w))) is not None]
            if found and max(found)[0] > best:
                best, log_w[j], improved = max(found)[0], max(found)[2], True
        if not improved:
            break
    return np.exp(log_w - log_w.mean())


@pytest.mark.parametrize("seed", range(6))
def test_decision_weights_are_the_plain_coordinate_search(seed):
    """The search moves one weight at a time and scores only the rows' new decisions (not an argmax over every
    class per trial): the same weights as the search spelled out, ties between classes included."""
    from sklearn.utils.class_weight import compute_sample_weight

    rng = np.random.default_rng(seed)
    n, k = 1200, 2 + seed % 4
    y = rng.choice(k, n, p=np.r_[0.5, np.full(k - 1, 0.5 / (k - 1))])
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    logits[:, 0] += 1.0  # the plain argmax favours class 0: weights have something to correct
    logits = np.round(logits, 1)  # exact ties between classes
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    groups = rng.random(n) < 0.3 if seed % 2 else None
    w = compute_sample_weight("balanced", y) if seed % 2 else None
    got = fit_decision_weights(proba, y, w, groups=groups)
    np.testing.assert_array_equal(got, _reference_weights(proba, y, w, groups))
    assert not np.allclose(got, 1.0)


def test_the_temperature_is_fitted_to_the_probabilities_as_served_classes_given_none_staying_impossible():
    # A random forest gives some classes exactly 0; serving keeps them 0 (apply_calibration), the fit read them as
    # 1e-12: with 0.2 % of rows' true class at 0, it chose 0.49 where the served probabilities' best was 0.31.
    from scipy.optimize import minimize_scalar

    rng = np.random.default_rng(3)
    logits = rng.normal(0, 1.0, size=(4_000, 3))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in proba])
    proba = np.round(proba ** 3 / (proba ** 3).sum(axis=1, keepdims=True), 2)  # overconfident, with exact zeros
    proba[:8, y[:8]] = 0.0  # a few rows whose true class the classifier ruled out
    proba[np.arange(8), (y[:8] + 1) % 3] += 0.5
    proba /= proba.sum(axis=1, keepdims=True)
    assert (proba == 0).any(axis=1).mean() > 0.05

    def served_loss(log_t: float) -> float:
        served = apply_calibration(proba, {"temperature": float(np.exp(log_t)), "bias": None})
        p_true = served[np.arange(len(y)), y]
        return -np.log(p_true[p_true > 0]).mean()  # the ruled-out rows are wrong at any temperature

    best = np.exp(minimize_scalar(served_loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded").x)
    assert fit_calibration(proba, y)["temperature"] == pytest.approx(best, rel=1e-3)
