"""Knowledge-informed features: how well a patient's symptoms match the rare diseases of the knowledge base.

A rare disease that has no patient in the training data is still described in the knowledge base
Diagnosa ships: the HPO disease annotations (Orphanet, OMIM, DECIPHER; ``diagnosa.data.orphan``),
each disease placed in one of the four illness categories. :class:`PhenotypeSimilarity` scores a
patient's HPO terms against every disease there with the semantic similarity of the literature:

- Information content (Resnik 1995, "Using information content to evaluate semantic similarity in
  a taxonomy", IJCAI): ``IC(t) = -log(share of the knowledge base's diseases whose annotations,
  closed under is_a, contain t)``. A term carried by one disease has the largest IC, log(N); the
  root and *Phenotypic abnormality* (HP:0000118) carry 0.
- Best-match average, patient → disease, as in the Phenomizer (Köhler et al. 2009, "Clinical
  diagnostics in human genetics with semantic similarity searches in ontologies", Am J Hum Genet
  85:457-464): ``sim(Q → D) = mean over patient terms q of max over disease terms d of
  IC(MICA(q, d))``, MICA being the most informative common ancestor. Because the ancestors of ``d``
  are the disease's closure, ``max_d IC(MICA(q, d)) = max IC(a) over a in ancestors(q) ∩ closure(D)``,
  which is what is computed: per patient term, over the term's ancestors, one dense row of 1371
  diseases each.

Scores are divided by log(N), so they lie in [0, 1]. Two more measures see both directions (patient
→ disease and disease → patient): simGIC (Pesquita et al. 2008) and the mean of the best-match
average and the disease's covered information (:meth:`PhenotypeSimilarity.measures`); the
best-match average alone rates a patient with one vague complaint a perfect match of every disease
that carries it. The transformer is fitted from the knowledge
base, never from labels (``y`` is ignored): features per category ("how close is the nearest
terminal disease?") carry over to diseases no training patient had. Unknown terms are ignored
(alternative ids map to their primary term); a patient without known terms scores 0 everywhere.

A match is only evidence when it is better than chance: as the Phenomizer reports a p-value per score
(the share of random queries of the same size that score as high), each patient's columns are weighted
by the p-value of its best simGIC match against random queries drawn from the knowledge base's
annotations (:meth:`PhenotypeSimilarity.match_weights`); a patient no closer to any rare disease than
random findings are gets columns near 0.

Besides the features, :meth:`PhenotypeSimilarity.rank` gives the best-matching diseases per patient
(the endpoint's decision-support differential) and :meth:`PhenotypeSimilarity.nearest_category`
the category of the nearest disease other than a given one.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin

from diagnosa.data.hpo import Ontology, load_ontology
from diagnosa.labels import DISEASE_CATEGORIES

# The method: Resnik information content over the HPO disease annotations (Orphanet/OMIM); best-match average
# patient → disease as in Köhler et al. 2009, Am J Hum Genet 85:457 (the Phenomizer).
LEADING_MEASURES = ("simgic", "symmetric")  # per category: max, the leader's score, the gap to the leader
# The chance level of a match (Köhler et al. 2009 judge a Phenomizer score by its p-value against random queries of
# the same size): per query size 1..NULL_MAX_TERMS, NULL_QUERIES random term sets drawn from the knowledge base's
# annotations, each one's best simGIC over all diseases. Larger queries use the largest size's null.
NULL_QUERIES = 300
NULL_MAX_TERMS = 30
# A best match at most FULL_WEIGHT_P likely by chance keeps the similarity columns whole, one at least ZERO_WEIGHT_P
# likely zeroes them, log-linear between (match_weights).
FULL_WEIGHT_P = 0.01
ZERO_WEIGHT_P = 1.0
FEATURE_BLOCK_ROWS = 4096  # patients scored at once by features(): bounds memory (see there)
ROW_CACHE_LIMIT = 4096  # per-term similarity rows kept per process (1371 float32 each, ~22 MB at most)


def as_lists(X: Any) -> list[list[str]]:
    """A list column (one-column DataFrame, Series or array of lists) → plain lists of strings; missing → []."""
    values = X.iloc[:, 0] if isinstance(X, pd.DataFrame) else X
    out = []
    for v in values:
        if isinstance(v, (list, tuple, np.ndarray)):
            out.append([str(x) for x in v])
        else:
            out.append([])  # missing list: no term
    return out


@dataclass(frozen=True)
class Knowledge:
    """What the similarity needs of a knowledge base: diseases (id, name, category) and their annotated terms."""

    diseases: pd.DataFrame  # disease_id, disease_name, category (source is derived from the id)
    phenotypes: pd.DataFrame  # disease_id, hpo_id
    release: str = ""


@functools.lru_cache(maxsize=1)
def _shipped_knowledge() -> Knowledge:
    from diagnosa.data.orphan import build_catalogue

    catalogue = build_catalogue()
    return Knowledge(catalogue.diseases, catalogue.phenotypes, catalogue.release)


def _source(disease_id: str) -> str:
    return disease_id.split(":", 1)[0]


class PhenotypeSimilarity(TransformerMixin, BaseEstimator):
    """HPO term lists → similarity to the knowledge base's diseases, summarised per illness category.

    Output (dense float32): per category of ``diagnosa.labels.DISEASE_CATEGORIES``, the best Resnik
    score of any of its diseases (``<category>:max``) and the mean of its ``top`` best
    (``<category>:top<k>``), then the best score overall (``best``); then, for each of
    ``LEADING_MEASURES`` (:meth:`measures`), per category its best score (``max``), that score when the
    category holds the nearest disease overall else 0 (``leads``), and its gap to the nearest (``gap``,
    <= 0). On the 20k cohort with 30% of the orphan diseases held out, the last two measures lifted
    unseen-disease macro recall of xgboost from 0.66 (Resnik alone) to 0.85 (2 seeds; docs/model-benchmark.md).

    Every column of a patient is multiplied by its :meth:`match_weights`: how far its best simGIC match is
    above chance, judged against random queries of as many terms (``null_queries`` per size, drawn from
    the knowledge base's annotations; 0: no weighting). Most patients of common diseases match no rare
    disease better than chance; unweighted, their columns were a lossy copy of their symptom indicators that
    the models leaned on (permuting them cost the common patients 0.10-0.23 of macro recall) and that cost
    common ENFERMEDAD TERMINAL patients recall (docs/model-benchmark.md).

    ``knowledge`` (an ``OrphanCatalogue`` or :class:`Knowledge`) and ``ontology`` default to the
    shipped knowledge base and ontology; tests pass hand-built ones.
    """

    def __init__(self, top: int = 3, knowledge: Any = None, ontology: Ontology | None = None,
                 null_queries: int = NULL_QUERIES, random_state: int = 0):
        self.top = top
        self.knowledge = knowledge
        self.ontology = ontology
        self.null_queries = null_queries
        self.random_state = random_state

    # -------------------------------------------------------------------------------------------- fit

    def fit(self, X: Any = None, y: Any = None) -> PhenotypeSimilarity:
        """Build the index from the knowledge base; ``X`` and ``y`` are not used (nothing is learned from patients)."""
        if not isinstance(self.top, (int, np.integer)) or isinstance(self.top, bool) or self.top < 1:
            raise ValueError(f"top must be a whole number >= 1, got {self.top!r}")
        if not isinstance(self.null_queries, (int, np.integer)) or isinstance(self.null_queries, bool) \
                or self.null_queries < 0:
            raise ValueError(f"null_queries must be a whole number >= 0 (0: no chance weighting), got {self.null_queries!r}")
        kb = self.knowledge if self.knowledge is not None else _shipped_knowledge()
        ontology = self._ontology()
        # Columns by category (in DISEASE_CATEGORIES order), then id: each category's diseases are one
        # contiguous block, so per-category maxima are one reduceat over the row.
        rank_of = {c: i for i, c in enumerate(DISEASE_CATEGORIES)}
        diseases = kb.diseases.assign(_rank=kb.diseases["category"].map(rank_of).fillna(len(rank_of))) \
            .sort_values(["_rank", "disease_id"], kind="stable").drop(columns="_rank").reset_index(drop=True)
        ids = diseases["disease_id"].astype(str).to_numpy()
        position = {d: i for i, d in enumerate(ids)}
        closures: list[set[str]] = [set() for _ in ids]
        for disease, term in zip(kb.phenotypes["disease_id"], kb.phenotypes["hpo_id"]):
            i = position.get(disease)
            if i is not None and term in ontology:
                closures[i] |= ontology.ancestors(term)
        terms = sorted(set().union(*closures)) if closures else []
        index = {t: j for j, t in enumerate(terms)}
        rows, cols = [], []
        for i, closure in enumerate(closures):
            for t in closure:
                rows.append(index[t])
                cols.append(i)
        n = max(len(ids), 1)
        closure_matrix = sp.csr_matrix((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(len(terms), len(ids)))
        counts = np.asarray(closure_matrix.sum(axis=1)).ravel()
        ic = -np.log(np.maximum(counts, 1) / n)
        scale = np.log(n) if n > 1 else 1.0
        categories = tuple(DISEASE_CATEGORIES)
        category_of = diseases["category"].astype(str).to_numpy()
        self.terms_ = np.array(terms, dtype=object)
        self.ic_ = (ic / scale).astype(np.float32)  # normalised information content, in [0, 1]
        self.closure_indptr_ = closure_matrix.indptr.astype(np.int32)
        self.closure_indices_: np.ndarray = closure_matrix.indices.astype(np.int16 if len(ids) < 2**15 else np.int32)
        self.disease_ic_ = np.asarray(closure_matrix.T.astype(np.float64) @ self.ic_.astype(np.float64)).ravel() \
            .astype(np.float32)  # each disease's closure IC
        self.disease_ids_ = ids.astype(object)
        self.disease_names_ = diseases["disease_name"].fillna("").astype(str).to_numpy(dtype=object)
        self.disease_categories_ = category_of.astype(object)
        self.categories_ = categories
        self.category_members_ = [np.flatnonzero(category_of == c).astype(np.int32) for c in categories]
        self.release_ = str(getattr(kb, "release", "") or "")
        self.ontology_release_ = ontology.release
        self.null_best_ = self._null_distribution(kb.phenotypes["hpo_id"], ontology) if self.null_queries else None
        return self

    def _null_distribution(self, annotated: pd.Series, ontology: Ontology) -> np.ndarray:
        """(NULL_MAX_TERMS, null_queries) float32, row k-1 sorted: the best simGIC over all diseases of random
        queries of k distinct terms, each term drawn as often as the knowledge base annotates it (so common,
        vague findings come up as often as they do in disease profiles). Seeded by ``random_state``."""
        counts = annotated[annotated.map(lambda t: ontology.primary(str(t)) in ontology)].astype(str).value_counts()
        counts = counts.sort_index()  # a fixed order: the draws must not depend on the annotations' row order
        terms, share = counts.index.to_numpy(dtype=object), counts.to_numpy(dtype=np.float64) / counts.sum()
        rng = np.random.default_rng(self.random_state)
        null = np.zeros((NULL_MAX_TERMS, int(self.null_queries)), dtype=np.float32)
        for size in range(1, min(NULL_MAX_TERMS, len(terms)) + 1):
            queries = [terms[rng.choice(len(terms), size=size, replace=False, p=share)].tolist()
                       for _ in range(int(self.null_queries))]
            null[size - 1] = np.sort(self._measure_stack(queries)[0][:, 1, :].max(axis=1))
        for size in range(len(terms) + 1, NULL_MAX_TERMS + 1):  # a knowledge base of fewer terms: its largest query
            null[size - 1] = null[len(terms) - 1] if len(terms) else 0.0
        return null

    def _ontology(self) -> Ontology:
        return self.ontology if self.ontology is not None else load_ontology()

    # -------------------------------------------------------------------------------------------- scores

    def _term_row(self, term: str) -> np.ndarray | None:
        """max over the term's ancestors a of IC(a) · closure[a, :] (None for a term the ontology does not know)."""
        cache: dict[str, np.ndarray | None] = self.__dict__.setdefault("_rows", {})
        if term in cache:
            return cache[term]
        ontology = self._ontology()
        index: dict[str, int] = self.__dict__.get("_index") or self.__dict__.setdefault(
            "_index", {t: j for j, t in enumerate(self.terms_)})
        primary = ontology.primary(term)
        if primary not in ontology:
            row = None
        else:
            shared = [index[a] for a in ontology.ancestors(primary) if a in index]
            shared.sort(key=lambda j: self.ic_[j])  # ascending IC: the most informative ancestor is written last
            row = np.zeros(len(self.disease_ids_), dtype=np.float32)
            indptr, indices, ic = self.closure_indptr_, self.closure_indices_, self.ic_
            for j in shared:
                if ic[j] > 0:
                    row[indices[indptr[j]:indptr[j + 1]]] = ic[j]
        if len(cache) >= ROW_CACHE_LIMIT:
            cache.clear()
        cache[term] = row
        return row

    def _term_closure(self, term: str) -> np.ndarray:
        """Indices (into ``terms_``) of the term and its ancestors the knowledge base knows, sorted; cached per term.

        Sorted: the order fixes the float32 sums below, and a set of ancestors (strings) iterates in hash
        order, which changes with every process (PYTHONHASHSEED)."""
        cache: dict[str, np.ndarray] = self.__dict__.setdefault("_closures", {})
        found = cache.get(term)
        if found is None:
            ontology = self._ontology()
            index: dict[str, int] = self.__dict__.get("_index") or self.__dict__.setdefault(
                "_index", {t: j for j, t in enumerate(self.terms_)})
            primary = ontology.primary(term)
            found = np.array(sorted(index[a] for a in ontology.ancestors(primary) if a in index)
                             if primary in ontology else [], dtype=np.int64)
            if len(cache) >= ROW_CACHE_LIMIT:
                cache.clear()
            cache[term] = found
        return found

    def _batch_terms(self, lists: list[list[str]]) -> tuple[list[np.ndarray], list[list[int]], list[np.ndarray]]:
        """The batch's distinct known terms, once each: their similarity rows (:meth:`_term_row`), per
        patient the rows of its terms (each distinct term once, in the order given), and per row the term's
        closure (:meth:`_term_closure`). One pass over the patients serves both the best-match average and the
        shared information content."""
        slot_of: dict[str, int] = {}
        rows: list[np.ndarray] = []
        closures: list[np.ndarray] = []
        slots: list[list[int]] = []
        for terms in lists:
            mine = []
            for term in dict.fromkeys(terms):
                slot = slot_of.get(term)
                if slot is None:
                    row = self._term_row(term)
                    slot = slot_of[term] = -1 if row is None else len(rows)
                    if row is not None:
                        rows.append(row)
                        closures.append(self._term_closure(term))
                if slot >= 0:
                    mine.append(slot)
            slots.append(mine)
        return rows, slots, closures

    @staticmethod
    def _best_match_average(rows: list[np.ndarray], slots: list[list[int]], out: np.ndarray) -> None:
        """Each patient's mean of its terms' rows into ``out`` (patients x diseases; rows without terms untouched).
        One mean per group of patients with the same number of terms: the same float32 sums, in the same order,
        as one mean per patient, without a numpy call per patient."""
        counts = np.fromiter(map(len, slots), dtype=np.int64, count=len(slots))
        for k in sorted(set(counts.tolist()) - {0}):
            members = np.flatnonzero(counts == k)
            block = np.stack([rows[slot] for i in members.tolist() for slot in slots[i]]).reshape(len(members), k, -1)
            value = block[:, 0] if k == 1 else np.mean(block, axis=1)
            if len(members) == len(slots):
                out[:] = value
            else:
                out[members] = value

    @staticmethod
    def _closure_pairs(slots: list[list[int]], closures: list[np.ndarray], n_terms: int) -> tuple[np.ndarray, np.ndarray]:
        """Every patient's terms with all their ancestors the knowledge base knows, for the whole batch at once:
        (patient row, term index) pairs without repeats, sorted by patient then term."""
        parts = [closures[slot] for mine in slots for slot in mine]
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        sizes = np.fromiter((sum(len(closures[slot]) for slot in mine) for mine in slots), dtype=np.int64,
                            count=len(slots))
        keys = np.sort(np.repeat(np.arange(len(slots), dtype=np.int64), sizes) * n_terms + np.concatenate(parts))
        # Repeats dropped from the sorted keys: what np.unique returns, which on integers now goes through a hash
        # table and costs 3-4x more (numpy 2.4: 230 vs 67 us for a 100-patient batch's 3,300 keys).
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
        return keys // n_terms, keys % n_terms

    def _incidence(self) -> sp.csr_matrix:
        """terms x diseases, 1 where the term is in the disease's ancestor closure (float64: exact sums below).

        Terms of zero information content (the ontology's roots, in every disease's closure) are left out:
        they add exactly 0 to any shared IC, and they held about half the entries a patient's row met (2,742 of ~4,900)."""
        found: sp.csr_matrix | None = self.__dict__.get("_incidence_cache")
        if found is None:
            closure = sp.csr_matrix((np.ones(len(self.closure_indices_)), self.closure_indices_, self.closure_indptr_),
                                    shape=(len(self.terms_), len(self.disease_ids_)))
            # the product is CSR already (tocsr() returns it as is); the stubs allow any compressed format
            found = self.__dict__["_incidence_cache"] = (sp.diags((self.ic_ != 0).astype(np.float64)) @ closure).tocsr()
            found.eliminate_zeros()
        return found

    def measures(self, term_lists: Any) -> dict[str, np.ndarray]:
        """Patients x diseases similarity under three measures (all in [0, 1]):

        - ``resnik``: best-match average patient → disease (Phenomizer; :meth:`scores`);
        - ``simgic``: IC-weighted Jaccard of the two ancestor closures (Pesquita et al. 2008, "Metrics
          for GO based protein semantic similarity: a systematic evaluation", BMC Bioinformatics 9:S4):
          sum IC(closure(Q) ∩ closure(D)) / sum IC(closure(Q) ∪ closure(D));
        - ``symmetric``: the mean of ``resnik`` and the share of the disease's closure IC the patient
          covers (disease → patient), so a patient with one vague complaint is not a perfect match of
          every disease carrying it.
        """
        stack, _ = self._measure_stack(as_lists(term_lists))
        return {"resnik": stack[:, 0], "simgic": stack[:, 1], "symmetric": stack[:, 2]}

    def _measure_stack(self, lists: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(patients, 3, diseases): resnik, simgic, symmetric (see :meth:`measures`); and per patient the number of
        distinct terms the ontology knows (the query size :meth:`_chance` judges a match by)."""
        n_d = len(self.disease_ids_)
        out = np.zeros((len(lists), 3, n_d), dtype=np.float32)
        resnik, inter, symmetric = out[:, 0], out[:, 1], out[:, 2]  # simgic's slot holds the intersection until the end
        rows, slots, closures = self._batch_terms(lists)
        self._best_match_average(rows, slots, resnik)
        ic = self.ic_
        patients, terms = self._closure_pairs(slots, closures, len(self.terms_))
        weights = ic[terms].astype(np.float64)
        patient_ic = np.bincount(patients, weights=weights, minlength=len(lists)).astype(np.float32)
        if len(terms):
            # The shared IC of patient closure and disease closure, for the whole batch at once: patients x
            # terms (each closure term weighted by its IC) times terms x diseases, summed in float64.
            indptr = np.concatenate([[0], np.cumsum(np.bincount(patients, minlength=len(lists)))])
            weighted = sp.csr_matrix((weights, terms, indptr), shape=(len(lists), len(self.terms_)))
            inter[:] = (weighted @ self._incidence()).toarray()
        disease_ic = self.disease_ic_[None, :]
        if self._every_disease_informative():
            np.divide(inter, disease_ic, out=symmetric)  # coverage (disease → patient)
        else:
            np.divide(inter, disease_ic, out=symmetric, where=disease_ic > 0)
        symmetric += resnik
        symmetric *= np.float32(0.5)
        union = disease_ic + patient_ic[:, None]
        union -= inter
        if union.size and union.min() > 0:  # the usual case: a masked divide costs twice as much
            np.divide(inter, union, out=inter)
        else:
            np.divide(inter, union, out=inter, where=union > 0)
        return out, np.fromiter(map(len, slots), dtype=np.int64, count=len(slots))

    def _every_disease_informative(self) -> bool:
        """Whether every disease's closure carries information (then coverage divides without a mask)."""
        found = self.__dict__.get("_informative")
        if found is None:
            found = self.__dict__["_informative"] = bool((self.disease_ic_ > 0).all())
        return found

    def _chance(self, best_simgic: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Monte Carlo p-value of each best simGIC against the null of its query size: (1 + #null >= best) /
        (1 + queries) (North, Curtis & Sham 2002); 1 for a patient without known terms."""
        null = self.null_best_
        assert null is not None  # callers weigh only a similarity fitted with a null
        p = np.ones(len(sizes), dtype=np.float64)
        for size in np.unique(sizes[sizes > 0]).tolist():
            rows = np.flatnonzero(sizes == size)
            reference = null[min(size, len(null)) - 1]
            above = len(reference) - np.searchsorted(reference, best_simgic[rows], side="left")
            p[rows] = (1.0 + above) / (1.0 + len(reference))
        return p

    def match_weights(self, term_lists: Any) -> np.ndarray:
        """Per patient, the weight its similarity columns carry (:meth:`features` multiplies them by it), from how
        unlikely its best simGIC match is by chance (:meth:`_chance`): log(ZERO_WEIGHT_P / p) /
        log(ZERO_WEIGHT_P / FULL_WEIGHT_P), clipped to [0, 1]. All ones when fitted with ``null_queries=0``."""
        lists = as_lists(term_lists)
        if getattr(self, "null_best_", None) is None:  # no null (null_queries=0, or an artifact from before it)
            return np.ones(len(lists), dtype=np.float32)
        stack, sizes = self._measure_stack(lists)
        best = stack[:, 1, :].max(axis=1) if len(self.disease_ids_) else np.zeros(len(lists))
        return self._weights(best, sizes)

    def _weights(self, best_simgic: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        p = self._chance(best_simgic, sizes)
        return np.clip(np.log(ZERO_WEIGHT_P / p) / np.log(ZERO_WEIGHT_P / FULL_WEIGHT_P), 0.0, 1.0).astype(np.float32)

    def scores(self, term_lists: Any) -> np.ndarray:
        """sim(patient → disease) for every patient (rows) and disease (columns, in :attr:`diseases` order)."""
        lists = as_lists(term_lists)
        out = np.zeros((len(lists), len(self.disease_ids_)), dtype=np.float32)
        rows, slots, _ = self._batch_terms(lists)
        self._best_match_average(rows, slots, out)
        return out

    @property
    def diseases(self) -> pd.DataFrame:
        """The knowledge base's diseases in the column order of :meth:`scores`."""
        return pd.DataFrame({"disease_id": self.disease_ids_, "name": self.disease_names_,
                             "source": [_source(d) for d in self.disease_ids_], "category": self.disease_categories_})

    @property
    def release(self) -> str:
        """The knowledge base's release (the HPO annotations' date)."""
        return self.release_

    # -------------------------------------------------------------------------------------------- features

    def _segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Disease columns ordered by category: (non-empty categories, column order, segment starts, sizes)."""
        cached = self.__dict__.get("_segment_cache")
        if cached is None:
            nonempty = np.array([c for c, m in enumerate(self.category_members_) if len(m)], dtype=np.int64)
            sizes = np.array([len(self.category_members_[c]) for c in nonempty], dtype=np.int64)
            order = (np.concatenate([self.category_members_[c] for c in nonempty]) if len(nonempty)
                     else np.zeros(0, dtype=np.int64))
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            cached = self.__dict__.setdefault("_segment_cache", (nonempty, order, starts, sizes))
            self.__dict__["_contiguous"] = bool(np.array_equal(order, np.arange(len(order))))
        return cached

    def _top_means(self, scores: np.ndarray, k: int) -> np.ndarray:
        """Per non-empty category (columns in category order), the mean of its ``k`` best scores, or of all of
        them in a category of fewer, summed best first. The best are taken one at a time (the row maximum, then
        knocked out): for the usual small ``k`` a few vectorised passes, where a partial sort per category and
        row (np.partition) cost 4x more on the endpoint's batches."""
        _, _, starts, sizes = self._segments()
        out = np.empty((len(scores), len(sizes)), dtype=np.float32)
        rows = np.arange(len(scores))
        for j, (start, size) in enumerate(zip(starts, sizes)):
            segment = scores[:, start:start + size]
            m = min(k, int(size))
            if size > m:
                remaining = segment.copy()
                best = np.empty((len(scores), m), dtype=np.float32)
                for i in range(m - 1):
                    at = remaining.argmax(axis=1)
                    best[:, i] = remaining[rows, at]
                    remaining[rows, at] = -np.inf
                best[:, m - 1] = remaining.max(axis=1)
            else:
                best = np.sort(segment, axis=1)[:, ::-1]
            out[:, j] = best.sum(axis=1) / np.float32(m)
        return out

    def transform(self, X: Any) -> np.ndarray:
        return self.features(X)

    def features(self, term_lists: Any) -> np.ndarray:
        """What :meth:`transform` returns, without scikit-learn's output wrapper (the endpoint's fast path).

        Rows are scored in blocks of ``FEATURE_BLOCK_ROWS``: a block's similarity stack is patients x 3 x
        diseases float32 (16 GB for a million patients at once; 66 MB per block), and rows are independent."""
        lists = as_lists(term_lists)
        # A row depends on its own list only, so each distinct list is scored once and its row repeated:
        # batches and cohorts repeat symptom lists (a third of a 100-patient batch of the default cohort).
        first: dict[tuple[str, ...], int] = {}
        inverse = np.fromiter((first.setdefault(tuple(terms), len(first)) for terms in lists), dtype=np.intp,
                              count=len(lists))
        if len(first) < len(lists):
            return self._distinct_features([list(terms) for terms in first])[inverse]
        return self._distinct_features(lists)

    def _distinct_features(self, lists: list[list[str]]) -> np.ndarray:
        if len(lists) <= FEATURE_BLOCK_ROWS:
            return self._block_features(lists)
        return np.vstack([self._block_features(lists[start:start + FEATURE_BLOCK_ROWS])
                          for start in range(0, len(lists), FEATURE_BLOCK_ROWS)])

    def _block_features(self, lists: list[list[str]]) -> np.ndarray:
        # One pass per measure over the disease columns sorted by category (reduceat), not one per
        # category: the endpoint pays this on every request.
        stack, query_sizes = self._measure_stack(lists)
        n, n_c, k = len(stack), len(self.categories_), int(self.top)
        nonempty, order, starts, sizes = self._segments()
        best = np.zeros((n, 3, n_c), dtype=np.float32)
        topk = np.zeros((n, n_c), dtype=np.float32)
        if len(order):
            if not self.__dict__.get("_contiguous"):  # columns fitted in category order need no gather
                stack = stack[:, :, order]
            best[:, :, nonempty] = np.maximum.reduceat(stack, starts, axis=2)
            topk[:, nonempty] = self._top_means(stack[:, 0, :], k)
        resnik = np.empty((n, 2 * n_c + 1), dtype=np.float32)
        resnik[:, 0:2 * n_c:2], resnik[:, 1:2 * n_c:2] = best[:, 0, :], topk
        resnik[:, -1] = best[:, 0, :].max(axis=1) if n_c else 0.0
        blocks = [resnik]
        for i, _ in enumerate(LEADING_MEASURES, start=1):
            per_category = best[:, i, :]
            top = per_category.max(axis=1, keepdims=True)
            # Which category the nearest disease belongs to, and by how much it leads: a model reads
            # "the closest match is a terminal disease" directly, whatever the disease.
            blocks += [per_category, (per_category == top) * top, per_category - top]
        out = np.hstack(blocks).astype(np.float32, copy=False)
        if getattr(self, "null_best_", None) is not None and n:
            # A patient whose best match is no better than chance (most common patients) gets columns near 0:
            # they then carry the rare-disease signal only, not a lossy copy of the symptom indicators.
            out *= self._weights(best[:, 1, :].max(axis=1), query_sizes)[:, None]
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = [f"{c}:{kind}" for c in self.categories_ for kind in ("max", f"top{int(self.top)}")] + ["best"]
        for name in LEADING_MEASURES:
            names += [f"{name}:{c}:{kind}" for kind in ("max", "leads", "gap") for c in self.categories_]
        return np.array(names, dtype=object)

    # -------------------------------------------------------------------------------------------- decision support

    def rank(self, term_lists: Any, n: int) -> list[list[dict[str, Any]]]:
        """The ``n`` best-matching diseases per patient, best first (ties by id): id, name, source, category, score."""
        S = np.round(self.scores(term_lists).astype(np.float64), 3)
        n = max(0, min(int(n), S.shape[1]))
        ranked = []
        id_rank = self._id_rank()
        for row in S:
            order = np.lexsort((id_rank, -row))[:n]  # best first, ties by id
            ranked.append([{"disease_id": str(self.disease_ids_[j]), "name": str(self.disease_names_[j]),
                            "source": _source(str(self.disease_ids_[j])), "category": str(self.disease_categories_[j]),
                            "score": float(row[j])} for j in order])
        return ranked

    def _id_rank(self) -> np.ndarray:
        """Each column's position in id order (columns are in category order): ties go to the lower id."""
        cached = self.__dict__.get("_id_rank_cache")
        if cached is None:
            cached = self.__dict__["_id_rank_cache"] = np.argsort(np.argsort(self.disease_ids_.astype(str),
                                                                             kind="stable"), kind="stable")
        return cached

    def nearest_category(self, term_lists: Any, exclude_ids: Sequence[str | None]) -> list[str | None]:
        """Per patient, the category of the best-matching disease other than ``exclude_ids[i]`` (None: no
        exclusion); None when nothing matches (no known term)."""
        S = self.scores(term_lists)
        if len(exclude_ids) != S.shape[0]:
            raise ValueError(f"exclude_ids has {len(exclude_ids)} entries for {S.shape[0]} patients")
        position = {d: j for j, d in enumerate(self.disease_ids_)}
        out: list[str | None] = []
        for row, excluded in zip(S, exclude_ids):
            j = position.get(excluded) if excluded is not None else None
            if j is not None:
                row = row.copy()
                row[j] = -1.0
            best = int(np.lexsort((self._id_rank(), -row))[0]) if row.size else -1  # ties: the lower id
            out.append(str(self.disease_categories_[best]) if best >= 0 and row[best] > 0 else None)
        return out

    # -------------------------------------------------------------------------------------------- pickling

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_rows", None)  # rebuilt on demand; keeps the artifact small
        state.pop("_index", None)
        state.pop("_closures", None)
        state.pop("_incidence_cache", None)
        state.pop("_segment_cache", None)
        state.pop("_contiguous", None)
        state.pop("_id_rank_cache", None)
        state.pop("_informative", None)
        return state


def similarity_of(transformer: Any) -> PhenotypeSimilarity | None:
    """The :class:`PhenotypeSimilarity` a column block starts with: the block itself, or the first step of its
    pipeline (the similarity then scaled, processing/features.py); None for any other block."""
    steps = getattr(transformer, "steps", None)
    first = steps[0][1] if steps else transformer
    return first if isinstance(first, PhenotypeSimilarity) else None


def find_similarity(features: Any) -> tuple[PhenotypeSimilarity | None, str | None]:
    """The fitted :class:`PhenotypeSimilarity` of a feature pipeline and the field it scores (None, None without)."""
    steps = getattr(features, "steps", None) or [(None, features)]
    for _, step in steps:
        for _, transformer, selected in getattr(step, "transformers_", []):
            transformer = similarity_of(transformer)
            if transformer is not None:
                field_name = selected if isinstance(selected, str) else list(selected)[0]
                return transformer, str(field_name)
    return None, None
