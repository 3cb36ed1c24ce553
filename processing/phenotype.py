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

Scores are divided by log(N), so they lie in [0, 1]. The transformer is fitted from the knowledge
base, never from labels (``y`` is ignored): features per category ("how close is the nearest
terminal disease?") carry over to diseases no training patient had. Unknown terms are ignored
(alternative ids map to their primary term); a patient without known terms scores 0 everywhere.

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

CITATION = ("Resnik information content over the HPO disease annotations (Orphanet/OMIM); best-match average "
            "patient → disease as in Köhler et al. 2009, Am J Hum Genet 85:457 (the Phenomizer)")
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

    Output (dense float32, all in [0, 1]): per category of ``diagnosa.labels.DISEASE_CATEGORIES``,
    the best score of any of its diseases (``<category>:max``) and the mean of its ``top`` best
    (``<category>:top<k>``), then the best score overall (``best``).

    ``knowledge`` (an ``OrphanCatalogue`` or :class:`Knowledge`) and ``ontology`` default to the
    shipped knowledge base and ontology; tests pass hand-built ones.
    """

    def __init__(self, top: int = 3, knowledge: Any = None, ontology: Ontology | None = None):
        self.top = top
        self.knowledge = knowledge
        self.ontology = ontology

    # -------------------------------------------------------------------------------------------- fit

    def fit(self, X: Any = None, y: Any = None) -> PhenotypeSimilarity:
        """Build the index from the knowledge base; ``X`` and ``y`` are not used (nothing is learned from patients)."""
        if not isinstance(self.top, (int, np.integer)) or isinstance(self.top, bool) or self.top < 1:
            raise ValueError(f"top must be a whole number >= 1, got {self.top!r}")
        kb = self.knowledge if self.knowledge is not None else _shipped_knowledge()
        ontology = self._ontology()
        diseases = kb.diseases.sort_values("disease_id").reset_index(drop=True)
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
        self.closure_indices_ = closure_matrix.indices.astype(np.int16 if len(ids) < 2**15 else np.int32)
        self.disease_ids_ = ids.astype(object)
        self.disease_names_ = diseases["disease_name"].fillna("").astype(str).to_numpy(dtype=object)
        self.disease_categories_ = category_of.astype(object)
        self.categories_ = categories
        self.category_members_ = [np.flatnonzero(category_of == c).astype(np.int32) for c in categories]
        self.release_ = str(getattr(kb, "release", "") or "")
        self.ontology_release_ = ontology.release
        return self

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

    def scores(self, term_lists: Any) -> np.ndarray:
        """sim(patient → disease) for every patient (rows) and disease (columns, in :attr:`diseases` order)."""
        lists = as_lists(term_lists)
        out = np.zeros((len(lists), len(self.disease_ids_)), dtype=np.float32)
        for i, terms in enumerate(lists):
            rows = [r for r in (self._term_row(t) for t in dict.fromkeys(terms)) if r is not None]
            if rows:
                out[i] = rows[0] if len(rows) == 1 else np.mean(rows, axis=0)
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

    def transform(self, X: Any) -> np.ndarray:
        S = self.scores(X)
        k = int(self.top)
        out = np.zeros((S.shape[0], 2 * len(self.categories_) + 1), dtype=np.float32)
        for c, members in enumerate(self.category_members_):
            if not len(members):
                continue
            part = S[:, members]
            out[:, 2 * c] = part.max(axis=1)
            if len(members) <= k:
                out[:, 2 * c + 1] = part.mean(axis=1)
            else:
                out[:, 2 * c + 1] = np.partition(part, len(members) - k, axis=1)[:, -k:].mean(axis=1)
        if S.shape[1]:
            out[:, -1] = S.max(axis=1)
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = [f"{c}:{kind}" for c in self.categories_ for kind in ("max", f"top{int(self.top)}")]
        return np.array([*names, "best"], dtype=object)

    # -------------------------------------------------------------------------------------------- decision support

    def rank(self, term_lists: Any, n: int) -> list[list[dict[str, Any]]]:
        """The ``n`` best-matching diseases per patient, best first (ties by id): id, name, source, category, score."""
        S = np.round(self.scores(term_lists).astype(np.float64), 3)
        n = max(0, min(int(n), S.shape[1]))
        ranked = []
        for row in S:
            # disease_ids_ is sorted, so a stable sort on -score breaks ties by id.
            order = np.argsort(-row, kind="stable")[:n]
            ranked.append([{"disease_id": str(self.disease_ids_[j]), "name": str(self.disease_names_[j]),
                            "source": _source(str(self.disease_ids_[j])), "category": str(self.disease_categories_[j]),
                            "score": float(row[j])} for j in order])
        return ranked

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
            best = int(np.argmax(row)) if row.size else -1
            out.append(str(self.disease_categories_[best]) if best >= 0 and row[best] > 0 else None)
        return out

    # -------------------------------------------------------------------------------------------- pickling

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_rows", None)  # rebuilt on demand; keeps the artifact small
        state.pop("_index", None)
        return state
