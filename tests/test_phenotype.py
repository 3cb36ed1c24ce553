"""PhenotypeSimilarity: Resnik information content + best-match average (Phenomizer) over the knowledge base."""
from __future__ import annotations

import copy
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from diagnosa.data.hpo import Ontology
from diagnosa.labels import ACUTE, CHRONIC, DISEASE_CATEGORIES, MILD, TERMINAL
from processing.phenotype import FULL_WEIGHT_P, LEADING_MEASURES, NULL_MAX_TERMS, ZERO_WEIGHT_P, Knowledge, PhenotypeSimilarity

ALL, ABNORMAL = "HP:0000001", "HP:0000118"
NERVOUS, SEIZURE, GENERALIZED, INTELLECT = "HP:0000707", "HP:0001250", "HP:0002069", "HP:0001249"
EYE, VISUAL = "HP:0000478", "HP:0000505"
ALT_OF_INTELLECT, OBSOLETE = "HP:0007000", "HP:0000005"

# A hand-built fragment of the HPO: All → Phenotypic abnormality → {nervous → {seizure → generalized, ID}, eye → visual}.
ONTOLOGY = Ontology(
    release="test",
    names={ALL: "All", ABNORMAL: "Phenotypic abnormality", NERVOUS: "Abnormality of the nervous system",
           SEIZURE: "Seizure", GENERALIZED: "Generalized seizure", INTELLECT: "Intellectual disability",
           EYE: "Abnormality of the eye", VISUAL: "Visual impairment", OBSOLETE: "obsolete term"},
    parents={ABNORMAL: (ALL,), NERVOUS: (ABNORMAL,), SEIZURE: (NERVOUS,), GENERALIZED: (SEIZURE,),
             INTELLECT: (NERVOUS,), EYE: (ABNORMAL,), VISUAL: (EYE,), OBSOLETE: (ALL,)},
    alt_ids={ALT_OF_INTELLECT: INTELLECT},
    obsolete=frozenset({OBSOLETE}),
)
PROFILES = {  # disease → (category, annotated terms)
    "ORPHA:1": (TERMINAL, [GENERALIZED, INTELLECT]),
    "OMIM:2": (CHRONIC, [SEIZURE, VISUAL]),
    "OMIM:3": (MILD, [VISUAL]),
    "ORPHA:4": (ACUTE, [INTELLECT, VISUAL]),
}


def knowledge(profiles=PROFILES) -> Knowledge:
    diseases = pd.DataFrame({"disease_id": list(profiles), "disease_name": [f"disease {d}" for d in profiles],
                             "category": [c for c, _ in profiles.values()]})
    phenotypes = pd.DataFrame([(d, t) for d, (_, terms) in profiles.items() for t in terms],
                              columns=["disease_id", "hpo_id"])
    return Knowledge(diseases, phenotypes, release="2025-01-16")


@pytest.fixture()
def model() -> PhenotypeSimilarity:
    """The raw measures (``null_queries=0``): four diseases have no meaningful chance level; the weighting by
    chance has its own tests on the shipped knowledge base below."""
    return PhenotypeSimilarity(knowledge=knowledge(), ontology=ONTOLOGY, null_queries=0).fit(None)


def ic(share: float) -> float:
    """Normalised IC of a term carried by ``share`` of the 4 diseases."""
    return -math.log(share) / math.log(4)


def score(model: PhenotypeSimilarity, terms: list[str]) -> dict[str, float]:
    return dict(zip(model.diseases["disease_id"], model.scores([terms])[0].tolist()))


def test_information_content_orders_terms_by_specificity(model):
    ic_of = dict(zip(model.terms_, model.ic_.tolist()))
    assert ic_of[ALL] == ic_of[ABNORMAL] == 0.0  # every disease carries them
    assert ic_of[GENERALIZED] > ic_of[SEIZURE] > ic_of[NERVOUS] > 0  # 1, 2 and 3 of the 4 diseases
    assert ic_of[GENERALIZED] == pytest.approx(1.0) and ic_of[SEIZURE] == pytest.approx(ic(2 / 4))


def test_best_match_average_patient_to_disease(model):
    s = score(model, [GENERALIZED])
    # The disease sharing the specific term beats the one sharing only its parent, which beats a cousin.
    assert s["ORPHA:1"] == pytest.approx(1.0)
    assert s["OMIM:2"] == pytest.approx(ic(2 / 4))
    assert s["ORPHA:4"] == pytest.approx(ic(3 / 4))  # MICA = the nervous system
    assert s["OMIM:3"] == 0.0  # only the root is shared
    # Mean over the patient's terms of the best match of each.
    two = score(model, [GENERALIZED, VISUAL])
    assert two["OMIM:2"] == pytest.approx((ic(2 / 4) + ic(3 / 4)) / 2)
    assert two["ORPHA:1"] == pytest.approx((1.0 + 0.0) / 2)


def test_unknown_obsolete_and_alternative_terms(model):
    base = score(model, [INTELLECT])
    assert score(model, [INTELLECT, "HP:9999999"]) == base  # unknown: ignored
    assert score(model, [INTELLECT, OBSOLETE]) == base  # obsolete: ignored
    assert score(model, [ALT_OF_INTELLECT]) == base  # alternative id: its primary term
    assert score(model, [INTELLECT, INTELLECT]) == base  # a repeated term counts once


def test_no_known_term_scores_zero_everywhere(model):
    X = pd.Series([[], None, ["HP:9999999"]], dtype=object)
    out = model.transform(X)
    assert out.shape == (3, 9 + 6 * len(model.categories_)) and out.dtype == np.float32 and not out.any()
    assert model.rank([[]], 2) == [[{"disease_id": "OMIM:2", "name": "disease OMIM:2", "source": "OMIM",
                                      "category": CHRONIC, "score": 0.0},
                                     {"disease_id": "OMIM:3", "name": "disease OMIM:3", "source": "OMIM",
                                      "category": MILD, "score": 0.0}]]  # ties by id


def test_features_per_category(model):
    names = model.get_feature_names_out().tolist()
    assert names[:9] == [f"{c}:{k}" for c in DISEASE_CATEGORIES for k in ("max", "top3")] + ["best"]
    assert names[9:] == [f"{m}:{c}:{k}" for m in ("simgic", "symmetric") for k in ("max", "leads", "gap")
                         for c in DISEASE_CATEGORIES]
    X = pd.DataFrame({"symptoms": [[GENERALIZED], [VISUAL]]})
    out = model.transform(X)
    row = dict(zip(names, out[0].tolist()))
    assert row[f"{TERMINAL}:max"] == pytest.approx(1.0) == row["best"]
    assert row[f"{CHRONIC}:max"] == pytest.approx(ic(2 / 4)) == row[f"{CHRONIC}:top3"]  # one disease: its score
    assert row[f"{MILD}:max"] == 0.0
    assert ((out[:, :9] >= 0) & (out[:, :9] <= 1)).all()
    gaps = out[:, [i for i, n in enumerate(names) if n.endswith(":gap")]]
    assert ((gaps <= 0) & (gaps >= -1)).all()
    # GENERALIZED is ORPHA:1's own term: under both measures the nearest disease is terminal, and leads.
    assert row[f"simgic:{TERMINAL}:leads"] == row[f"simgic:{TERMINAL}:max"] > 0 == row[f"simgic:{MILD}:leads"]
    assert row[f"symmetric:{TERMINAL}:gap"] == 0.0 > row[f"symmetric:{CHRONIC}:gap"]
    # top-k is the mean of the k best of the category, with more diseases than k.
    many = {**PROFILES, **{f"OMIM:1{i}": (TERMINAL, [SEIZURE if i % 2 else VISUAL]) for i in range(4)}}
    big = PhenotypeSimilarity(top=2, knowledge=knowledge(many), ontology=ONTOLOGY, null_queries=0).fit(None)
    s = big.scores([[GENERALIZED]])[0]
    terminal = np.sort(s[(big.diseases["category"] == TERMINAL).to_numpy()])[::-1]
    feats = dict(zip(big.get_feature_names_out(), big.transform(pd.Series([[GENERALIZED]]))[0].tolist()))
    assert feats[f"{TERMINAL}:top2"] == pytest.approx(terminal[:2].mean())


def test_fitted_from_the_knowledge_base_not_labels(model):
    other = PhenotypeSimilarity(knowledge=knowledge(), ontology=ONTOLOGY, null_queries=0).fit(pd.Series([[VISUAL]] * 3),
                                                                                         y=[1, 2, 3])
    X = pd.Series([[GENERALIZED, VISUAL]])
    np.testing.assert_array_equal(model.transform(X), other.transform(X))
    np.testing.assert_array_equal(clone(model).fit(None).transform(X), model.transform(X))
    with pytest.raises(ValueError, match="top"):
        PhenotypeSimilarity(top=0, knowledge=knowledge(), ontology=ONTOLOGY).fit(None)


def test_rank_and_nearest_category(model):
    [ranked] = model.rank([[GENERALIZED, INTELLECT]], 3)
    # OMIM:2 (seizure + nervous system) and ORPHA:4 (nervous system + ID) tie: by id.
    assert [r["disease_id"] for r in ranked] == ["ORPHA:1", "OMIM:2", "ORPHA:4"]
    assert ranked[1]["score"] == ranked[2]["score"] == round((ic(2 / 4) + ic(3 / 4)) / 2, 3)
    assert ranked[0] == {"disease_id": "ORPHA:1", "name": "disease ORPHA:1", "source": "ORPHA", "category": TERMINAL,
                         "score": 0.75}  # (IC(generalized) = 1 + IC(ID) = 0.5) / 2
    scores = [r["score"] for r in ranked]
    assert scores == sorted(scores, reverse=True) and all(round(s, 3) == s for s in scores)
    assert len(model.rank([[VISUAL]], 50)[0]) == 4  # at most the whole knowledge base
    near = model.nearest_category([[GENERALIZED], [GENERALIZED], [], [VISUAL]], ["ORPHA:1", None, None, "OMIM:3"])
    assert near == [CHRONIC, TERMINAL, None, CHRONIC]  # OMIM:2 is next after ORPHA:1; OMIM:3's nearest other is OMIM:2
    with pytest.raises(ValueError):
        model.nearest_category([[GENERALIZED]], [])


def test_pickle_drops_caches(model):
    X = pd.Series([[GENERALIZED, VISUAL], [INTELLECT]])
    before = model.transform(X)
    assert model.__dict__.get("_rows")
    restored = pickle.loads(pickle.dumps(model))
    assert "_rows" not in restored.__dict__ and "_index" not in restored.__dict__
    np.testing.assert_array_equal(restored.transform(X), before)


# ------------------------------------------------------------------------------------------------ the shipped knowledge base

@pytest.fixture(scope="module")
def shipped() -> PhenotypeSimilarity:
    return PhenotypeSimilarity().fit(None)


def test_shipped_knowledge_base_recognises_its_own_diseases(shipped):
    from diagnosa.data.orphan import build_catalogue

    catalogue = build_catalogue()
    assert len(shipped.diseases) == len(catalogue) and shipped.release == catalogue.release
    assert set(shipped.diseases["category"]) == set(DISEASE_CATEGORIES)
    sample = catalogue.diseases["disease_id"].sample(200, random_state=0).tolist()
    profiles = catalogue.phenotypes.groupby("disease_id")["hpo_id"].apply(list)
    ranked = shipped.rank([profiles[d] for d in sample], 1)
    first = sum(r[0]["disease_id"] == d for r, d in zip(ranked, sample))
    assert first >= 0.9 * len(sample), f"only {first} of {len(sample)} diseases rank first on their own profile"
    near = shipped.nearest_category([profiles[d] for d in sample], sample)
    assert all(c in DISEASE_CATEGORIES for c in near)


def test_the_fitted_transformer_pickles_small(shipped):
    # Its time per patient is a benchmark figure (benchmarks/bench_serving.py), not a test.
    assert len(pickle.dumps(shipped)) < 2_000_000


def test_both_directions_tell_a_full_presentation_from_one_vague_complaint(model):
    """simGIC and the symmetric measure rank a patient with a disease's whole profile above a patient
    with one of its terms; the one-directional best-match average cannot (both score the maximum)."""
    full, single = [[SEIZURE, VISUAL]], [[SEIZURE]]  # OMIM:2's whole profile, and one of its terms
    j = list(model.disease_ids_).index("OMIM:2")
    for name in ("simgic", "symmetric"):
        a, b = model.measures(full)[name], model.measures(single)[name]
        assert 0.0 <= b.min() and a.max() <= 1.0 + 1e-6
        assert a[0, j] > b[0, j], name
    assert model.measures(full)["simgic"][0, j] == pytest.approx(1.0)  # identical closures
    names = model.get_feature_names_out().tolist()
    out = model.transform(pd.Series([[SEIZURE, INTELLECT]], dtype=object))[0]
    assert len(names) == len(out) == 9 + 2 * 3 * len(model.categories_)
    gaps = [v for n, v in zip(names, out) if n.endswith(":gap")]
    leads = [v for n, v in zip(names, out) if n.endswith(":leads")]
    assert max(gaps) == 0.0 and min(gaps) <= 0.0 and sum(v > 0 for v in leads) >= 1


def test_features_do_not_depend_on_the_process_hash_seed():
    """Sets of HPO ids iterate in hash order, which changes per process: the features must not (two pipeline
    runs on the same data gave different models when they did)."""
    import subprocess
    import sys

    script = ("import hashlib; from processing.phenotype import PhenotypeSimilarity, _shipped_knowledge; "
              "ps = PhenotypeSimilarity().fit(); "
              "profiles = _shipped_knowledge().phenotypes.groupby('disease_id')['hpo_id'].apply(list).tolist(); "
              "X = ps.transform(profiles[:300] + [['HP:0001945'], []]); "
              "print(hashlib.sha256(X.tobytes()).hexdigest())")
    root = Path(__file__).resolve().parents[1]
    digests = {subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(digests) == 1


def test_batch_measures_equal_the_per_patient_definitions(shipped):
    """The batch path (one closure pass, one sparse product, one partial sort per category) gives what the
    definitions say for each patient alone: simGIC over Python sets, and each category's top-k mean."""
    rng = np.random.default_rng(3)
    terms = list(shipped.terms_)
    lists = [[str(t) for t in rng.choice(terms, size=k)] for k in rng.integers(0, 12, size=60)]
    lists += [[], ["HP:0000001"], ["HP:9999999"], lists[1], [lists[2][0]] * 3 if lists[2] else []]
    ic = shipped.ic_.astype(np.float64)
    disease_closures: list[set[int]] = [set() for _ in shipped.disease_ids_]  # the fitted terms x diseases CSR
    for term, (a, b) in enumerate(zip(shipped.closure_indptr_[:-1], shipped.closure_indptr_[1:])):
        for disease in shipped.closure_indices_[a:b]:
            disease_closures[disease].add(term)
    measures = shipped.measures(lists)
    features = dict(zip(shipped.get_feature_names_out(), shipped.features(lists).T))
    weights = shipped.match_weights(lists)  # the features are the measures' summaries times the patient's weight
    members = {c: np.flatnonzero(np.asarray(shipped.disease_categories_) == c) for c in shipped.categories_}
    for i, patient in enumerate(lists):
        closure = set().union(*(shipped._term_closure(t).tolist() for t in patient)) if patient else set()
        expected = [sum(ic[t] for t in closure & d) / u if (u := sum(ic[t] for t in closure | d)) > 0 else 0.0
                    for d in disease_closures]
        np.testing.assert_allclose(measures["simgic"][i], expected, rtol=1e-5, atol=1e-7)
        for category, columns in members.items():
            if len(columns):
                best = np.sort(measures["resnik"][i, columns].astype(np.float64))[::-1][:shipped.top]
                assert features[f"{category}:top{shipped.top}"][i] == pytest.approx(best.mean() * weights[i], rel=1e-5,
                                                                                    abs=1e-7)


def test_features_in_row_blocks_equal_one_pass(shipped, monkeypatch):
    """Large inputs are scored in blocks of rows to bound memory; blocks must not change a value."""
    import processing.phenotype as phenotype

    rng = np.random.default_rng(5)
    lists = [[str(t) for t in rng.choice(shipped.terms_, size=k)] for k in rng.integers(0, 10, size=30)]
    whole = shipped.features(lists)
    monkeypatch.setattr(phenotype, "FEATURE_BLOCK_ROWS", 7)
    assert np.array_equal(shipped.features(lists), whole)
    assert shipped.features([]).shape == (0, whole.shape[1])


def _reference_features(ps: PhenotypeSimilarity, lists: list[list[str]]) -> np.ndarray:
    """The features one patient at a time, straight from the definitions (Python sets and loops), with the float
    arithmetic the batch path keeps: term rows and their mean in float32, shared and patient IC summed in float64
    in term order, then float32 ratios. Slow; any change of algorithm must still equal it to the last bit."""
    ontology = ps._ontology()
    index = {t: j for j, t in enumerate(ps.terms_)}
    ic32, ic64, zero, half = ps.ic_, ps.ic_.astype(np.float64), np.float32(0), np.float32(0.5)
    disease_closures: list[set[int]] = [set() for _ in ps.disease_ids_]
    for term, (a, b) in enumerate(zip(ps.closure_indptr_[:-1], ps.closure_indptr_[1:])):
        for disease in ps.closure_indices_[a:b]:
            disease_closures[disease].add(term)
    out = []
    for terms in lists:
        rows, closure = [], set()
        for term in dict.fromkeys(terms):
            if ontology.primary(term) not in ontology:
                continue
            ancestors = {index[a] for a in ontology.ancestors(ontology.primary(term)) if a in index}
            rows.append(np.array([max((ic32[a] for a in ancestors & d), default=zero) for d in disease_closures]))
            closure |= ancestors
        resnik = np.zeros(len(disease_closures), np.float32) if not rows else np.mean(np.stack(rows), axis=0)
        patient_ic = 0.0
        for t in sorted(closure):
            patient_ic += ic64[t]
        simgic, symmetric = np.zeros_like(resnik), np.zeros_like(resnik)
        for j, d in enumerate(disease_closures):
            shared = 0.0
            for t in sorted(closure & d):
                shared += ic64[t]
            inter, disease_ic = np.float32(shared), ps.disease_ic_[j]
            symmetric[j] = ((inter / disease_ic if disease_ic > 0 else zero) + resnik[j]) * half
            union = disease_ic + np.float32(patient_ic) - inter
            simgic[j] = inter / union if union > 0 else inter
        best = {name: [max(v[m]) if len(m) else zero for m in ps.category_members_]
                for name, v in (("resnik", resnik), ("simgic", simgic), ("symmetric", symmetric))}
        top = []
        for members in ps.category_members_:
            total = zero
            for v in sorted(resnik[members], reverse=True)[:ps.top]:
                total = total + v
            top.append(total / np.float32(min(ps.top, len(members))) if len(members) else zero)
        row = [v for pair in zip(best["resnik"], top) for v in pair] + [max(best["resnik"])]
        for name in LEADING_MEASURES:
            lead = max(best[name])
            row += best[name] + [v if v == lead else zero for v in best[name]] + [v - lead for v in best[name]]
        if getattr(ps, "null_best_", None) is not None:  # weighted by the chance of the best simGIC match
            null = ps.null_best_[min(len(rows), len(ps.null_best_)) - 1]
            p = 1.0 if not rows else (1 + sum(1 for v in null if v >= max(best["simgic"]))) / (1 + len(null))
            weight = np.float32(min(1.0, max(0.0, math.log(ZERO_WEIGHT_P / p) / math.log(ZERO_WEIGHT_P / FULL_WEIGHT_P))))
            row = [np.float32(v) * weight for v in row]
        out.append(row)
    return np.array(out, dtype=np.float32).reshape(len(lists), -1)


def test_batch_features_equal_the_per_patient_reference_to_the_bit(shipped):
    """On the shipped knowledge base, the batch path (speed-ups included) gives exactly, bit for bit, the features
    of the per-patient definitions: real disease profiles, random term lists, repeats, unknown ids and empty lists,
    in one batch with patients of different term counts."""
    from processing.phenotype import _shipped_knowledge

    rng = np.random.default_rng(11)
    profiles = _shipped_knowledge().phenotypes.groupby("disease_id")["hpo_id"].apply(list).tolist()
    lists = [[str(t) for t in rng.choice(shipped.terms_, size=k)] for k in rng.integers(0, 9, size=24)]
    lists += [profiles[int(i)] for i in rng.choice(len(profiles), size=12, replace=False)]
    lists += [[], ["HP:0000001"], ["HP:9999999", "HP:0001945"], ["HP:0001945", "HP:0012735", "HP:0002094"] * 2,
              ["HP:0007000", "HP:0001249"]]  # an alternative id beside its primary term
    expected = _reference_features(shipped, lists)
    assert np.array_equal(shipped.features(lists), expected)
    assert np.array_equal(shipped.features(lists[::-1]), expected[::-1])
    assert np.array_equal(shipped.features([lists[-2]] * 100), np.repeat(expected[-2:-1], 100, axis=0))
    assert np.array_equal(shipped.scores(lists), shipped.measures(lists)["resnik"])
    for top in (1, 5):  # other means of the best (the default is 3)
        other = copy.copy(shipped)
        other.top = top
        assert np.array_equal(other.features(lists), _reference_features(other, lists))


def test_each_distinct_term_list_is_scored_once(shipped, monkeypatch):
    """Repeated lists (in any position, across row blocks) are scored once and their rows repeated: the same
    features as scoring every row; lists with the same terms in another order are different lists."""
    import processing.phenotype as phenotype

    rng = np.random.default_rng(3)
    distinct = [[str(t) for t in rng.choice(shipped.terms_, size=k, replace=False)] for k in (1, 2, 3, 4, 5)]
    distinct += [distinct[-1][::-1], []]
    lists = [distinct[int(i)] for i in rng.integers(0, len(distinct), size=40)]
    expected = _reference_features(shipped, lists)
    scored: list[int] = []
    measure_stack = phenotype.PhenotypeSimilarity._measure_stack
    monkeypatch.setattr(phenotype.PhenotypeSimilarity, "_measure_stack",
                        lambda self, block: scored.append(len(block)) or measure_stack(self, block))
    monkeypatch.setattr(phenotype, "FEATURE_BLOCK_ROWS", 3)
    assert np.array_equal(shipped.features(lists), expected)
    assert sum(scored) == len({tuple(terms) for terms in lists}) <= len(distinct)


def test_hand_built_features_equal_the_reference_to_the_bit(model):
    """Categories with fewer diseases than ``top`` (one each here), alternative and obsolete ids."""
    lists = [[SEIZURE, VISUAL], [GENERALIZED], [ALT_OF_INTELLECT, INTELLECT], [OBSOLETE], [], [ABNORMAL, EYE, NERVOUS]]
    assert np.array_equal(model.features(lists), _reference_features(model, lists))


# ------------------------------------------------------------------------------------------------ chance weighting

def _annotation_draws(seed: int, sizes: list[int]) -> list[list[str]]:
    """Random patients drawn as the null draws them (terms as often as the knowledge base annotates them), from
    another seed."""
    from processing.phenotype import _shipped_knowledge

    counts = _shipped_knowledge().phenotypes["hpo_id"].value_counts().sort_index()
    rng = np.random.default_rng(seed)
    return [rng.choice(counts.index.to_numpy(), size=k, replace=False, p=counts.to_numpy() / counts.sum()).tolist()
            for k in sizes]


def test_match_weights_tell_a_rare_disease_presentation_from_chance(shipped):
    """A knowledge-base disease's own profile is far above chance (weight 1); random findings reach p <= 0.01,
    the full weight, about once in a hundred (the null is calibrated), and common vague complaints weigh little."""
    from processing.phenotype import _shipped_knowledge

    profiles = _shipped_knowledge().phenotypes.groupby("disease_id")["hpo_id"].apply(list)
    assert (shipped.match_weights(profiles.sample(200, random_state=1).tolist()) == 1.0).mean() >= 0.95
    random = shipped.match_weights(_annotation_draws(99, [int(k) for k in np.random.default_rng(0).integers(1, 8, 400)]))
    assert (random == 1.0).mean() <= 0.03 and np.median(random) < 0.3
    assert ((random >= 0) & (random <= 1)).all() and random.dtype == np.float32
    fatigue_and_dyspnoea = shipped.match_weights([["HP:0012378", "HP:0002094"]])[0]
    assert fatigue_and_dyspnoea < 0.1
    assert shipped.match_weights([[], ["HP:9999999"]]).tolist() == [0.0, 0.0]  # nothing known: nothing matched


def test_features_are_the_raw_measures_times_the_match_weight(shipped):
    """Each patient's columns are its unweighted columns scaled by its weight; null_queries=0 and an artifact
    fitted before the weighting existed (no null) give the unweighted columns."""
    lists = _annotation_draws(5, [1, 2, 3, 5, 8, 12, 40]) + [[], ["HP:0001945", "HP:0012735", "HP:0002094"]]
    raw = copy.copy(shipped)
    raw.null_best_ = None
    unweighted = raw.features(lists)
    weights = shipped.match_weights(lists)
    assert np.array_equal(shipped.features(lists), unweighted * weights[:, None])
    assert (np.abs(shipped.features(lists)) <= np.abs(unweighted)).all()
    before = copy.copy(shipped)
    del before.null_best_  # pickled by an earlier version
    assert np.array_equal(before.features(lists), unweighted)
    assert np.array_equal(before.match_weights(lists), np.ones(len(lists), dtype=np.float32))


def test_the_null_is_seeded_and_covers_every_query_size():
    """The null comes from the knowledge base alone, the same for the same seed; sizes beyond the knowledge base's
    distinct terms reuse its largest query (the hand-built base annotates 4 terms)."""
    small = PhenotypeSimilarity(knowledge=knowledge(), ontology=ONTOLOGY, null_queries=40).fit(None)
    assert small.null_best_.shape == (NULL_MAX_TERMS, 40)
    assert (np.diff(small.null_best_, axis=1) >= 0).all()  # each size's row sorted
    assert (small.null_best_[4:] == small.null_best_[3]).all()
    again = PhenotypeSimilarity(knowledge=knowledge(), ontology=ONTOLOGY, null_queries=40).fit(pd.Series([[VISUAL]]))
    assert np.array_equal(again.null_best_, small.null_best_)
    other = PhenotypeSimilarity(knowledge=knowledge(), ontology=ONTOLOGY, null_queries=40, random_state=1).fit(None)
    assert not np.array_equal(other.null_best_, small.null_best_)
    # For one query size, the better the best match, the less likely by chance: weights follow the best simGIC.
    singles = [[t] for t in (GENERALIZED, INTELLECT, SEIZURE, VISUAL, NERVOUS, EYE)]
    best = small.measures(singles)["simgic"].max(axis=1)
    weights = small.match_weights(singles)
    assert (np.diff(weights[np.argsort(best, kind="stable")]) >= 0).all() and weights.max() > weights.min()
    assert PhenotypeSimilarity(knowledge=knowledge(), ontology=ONTOLOGY, null_queries=0).fit(None).null_best_ is None


@pytest.mark.parametrize("bad", [-1, True, 2.5, "300"])
def test_null_queries_must_be_a_whole_number(bad):
    with pytest.raises(ValueError, match="null_queries"):
        PhenotypeSimilarity(knowledge=knowledge(), ontology=ONTOLOGY, null_queries=bad).fit(None)
