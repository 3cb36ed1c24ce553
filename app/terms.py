"""Symptom search over HPO term names (and their synonyms), not raw ids.

The index is built once per process (the app caches it): every current term under *Phenotypic
abnormality* of the ontology the endpoint validates against (:func:`diagnosa.data.hpo.load_ontology`),
with its name and its exact and related synonyms from the same ``hp.obo``. Words are folded
(lower case, accents removed) and kept in a sorted list, each with the set of terms it occurs in,
so a query costs one binary search per query word plus a set intersection: every query word
must be the beginning of a word of the name or of one synonym ("abd pain" finds *Abdominal pain*).

Ranking: a name or synonym equal to the query first; then matches by name before matches by a
synonym, each a text starting with the query before one whose words merely cover it; then terms
the model saw in training (a feature of its own), then shorter names. A query that is an HPO id (``HP:0001945``
or ``0001945``) finds that term.
"""
from __future__ import annotations

import bisect
import heapq
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from diagnosa.data.hpo import PHENOTYPIC_ABNORMALITY, Ontology, hpo_data_dir, load_ontology

DEFAULT_LIMIT = 8
MIN_QUERY = 2  # letters before a search starts: one letter matches most of the ontology
# The characters of a query searched: more than any term's name. A paste of megabytes took seconds to fold, twice
# per keystroke (the search box is live); its beginning is searched.
MAX_QUERY = 200
_WORD = re.compile(r"[a-z0-9]+")
_ID = re.compile(r"^(?:hp[:_ ]?)?([0-9]{7})$", re.IGNORECASE)
_SYNONYM = re.compile(r'^synonym: "(.*)" (EXACT|RELATED)\b')


def fold(text: str) -> str:
    """Lower case without accents: 'Fiebre Aguda' and 'fiébre agúda' fold alike."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    return _WORD.findall(fold(text))


def _quality(joined: str, folded_query: str) -> int:
    """0: the text is the query; 1: it starts with the query; 2: its words merely cover the query's."""
    return 0 if joined == folded_query else 1 if joined.startswith(folded_query) else 2


@dataclass(frozen=True)
class Term:
    id: str
    name: str
    synonym: str | None = None  # the synonym that matched, when the name itself did not

    @property
    def label(self) -> str:
        """What the doctor reads: the name, the synonym typed if that is what matched, and the id."""
        via = f" — “{self.synonym}”" if self.synonym else ""
        return f"{self.name}{via} · {self.id}"


def read_synonyms(obo: Path | None = None) -> dict[str, tuple[str, ...]]:
    """EXACT and RELATED synonyms per term id, read from ``hp.obo`` (the ontology reader keeps names only)."""
    path = obo or hpo_data_dir() / "hp.obo"
    found: dict[str, list[str]] = {}
    current: str | None = None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("["):
                current = None
            elif line.startswith("id: "):
                current = line[4:].strip()
            elif current and line.startswith("synonym: "):
                match = _SYNONYM.match(line)
                if match:
                    found.setdefault(current, []).append(match.group(1))
    return {term: tuple(names) for term, names in found.items()}


class TermIndex:
    """Word-prefix index over term names and synonyms; :meth:`search` answers in well under a millisecond."""

    def __init__(self, names: dict[str, str], synonyms: dict[str, tuple[str, ...]] | None = None,
                 preferred: Iterable[str] = ()):
        self.ids: list[str] = sorted(names)
        self.names: list[str] = [names[t] for t in self.ids]
        self._position = {t: i for i, t in enumerate(self.ids)}
        self._folded = [fold(n) for n in self.names]
        self._synonyms: list[tuple[str, ...]] = [tuple((synonyms or {}).get(t, ())) for t in self.ids]
        self._synonym_words = [tuple(tuple(words(s)) for s in synonyms_of) for synonyms_of in self._synonyms]
        self._synonym_joined = [tuple(" ".join(w) for w in of) for of in self._synonym_words]
        preferred_set = set(preferred)
        self._preferred = [t in preferred_set for t in self.ids]
        postings: dict[str, set[int]] = {}
        self._name_words: list[tuple[str, ...]] = []
        self._name_joined: list[str] = []
        for i, name in enumerate(self.names):
            own = words(name)
            self._name_words.append(tuple(own))
            self._name_joined.append(" ".join(own))
            for word in own:
                postings.setdefault(word, set()).add(i)
            for synonym in self._synonyms[i]:
                for word in words(synonym):
                    postings.setdefault(word, set()).add(i)
        self._words = sorted(postings)
        self._postings = [frozenset(postings[w]) for w in self._words]

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, term: str) -> bool:
        return term in self._position

    def name(self, term: str) -> str:
        position = self._position.get(term)
        return self.names[position] if position is not None else term

    def term(self, term: str) -> Term:
        return Term(term, self.name(term))

    def _matching(self, prefix: str) -> set[int]:
        out: set[int] = set()
        start = bisect.bisect_left(self._words, prefix)
        for k in range(start, len(self._words)):
            if not self._words[k].startswith(prefix):
                break
            out |= self._postings[k]
        return out

    @staticmethod
    def _covers(query: list[str], text_words: tuple[str, ...]) -> bool:
        return all(any(w.startswith(q) for w in text_words) for q in query)

    def search(self, query: str, limit: int = DEFAULT_LIMIT) -> list[Term]:
        """Terms whose name (or a synonym) has a word starting with each query word, best first."""
        text = query.strip()[:MAX_QUERY].strip()
        if not text or limit <= 0:
            return []
        as_id = _ID.fullmatch(text.replace(" ", "")) if any(c.isdigit() for c in text) else None
        if as_id:
            term = f"HP:{as_id.group(1)}"
            return [self.term(term)] if term in self._position else []
        query_words = sorted(set(words(text)), key=len, reverse=True)
        if not query_words or len("".join(query_words)) < MIN_QUERY:
            return []
        candidates: set[int] | None = None
        for q in query_words:  # longest words first: the smallest sets, so the intersection shrinks fast
            hits = self._matching(q)
            candidates = hits if candidates is None else candidates & hits
            if not candidates:
                return []
        folded_query = " ".join(words(text))
        ranked = []
        for i in candidates or ():
            best: tuple[int, bool, str | None] | None = None  # (quality, via a synonym, the synonym)
            if self._covers(query_words, self._name_words[i]):
                best = (_quality(self._name_joined[i], folded_query), False, None)
            if best is None or best[0] > 0:
                for synonym, synonym_words, joined in zip(self._synonyms[i], self._synonym_words[i],
                                                          self._synonym_joined[i]):
                    if best is not None and not joined.startswith(folded_query):
                        continue  # cannot beat the name's match
                    if self._covers(query_words, synonym_words):
                        found = (_quality(joined, folded_query), True, synonym)
                        if best is None or found[:2] < best[:2]:
                            best = found
                        if best[0] == 0:
                            break
            if best is None:  # the words are spread over the name and several synonyms: not a match
                continue
            ranked.append(((best[0] != 0, best[1], best[0], not self._preferred[i], len(self.names[i]),
                            self.names[i]), i, best[2]))
        return [Term(self.ids[i], self.names[i], synonym) for _, i, synonym in heapq.nsmallest(limit, ranked)]


def phenotype_names(ontology: Ontology) -> dict[str, str]:
    """Current terms under Phenotypic abnormality: the symptoms and signs a doctor records."""
    return {t: n for t, n in ontology.names.items()
            if t in ontology and t != PHENOTYPIC_ABNORMALITY and ontology.is_under(t, PHENOTYPIC_ABNORMALITY)}


def build_index(preferred: Iterable[str] = (), ontology: Ontology | None = None,
                synonyms: dict[str, tuple[str, ...]] | None = None) -> TermIndex:
    """The index the app searches; ``preferred`` are the terms the model saw in training."""
    ontology = ontology or load_ontology()
    return TermIndex(phenotype_names(ontology), read_synonyms() if synonyms is None else synonyms, preferred)
