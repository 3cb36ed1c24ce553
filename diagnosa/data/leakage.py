"""What a dataset of one's own can teach a model that no new patient brings, as ingestion reports it.

A probe (session 68) ingested such tables without a word, and the runs' evaluations then promised what new patients
never got:
- 400 patients each written twice under two ids: 52 of the 80 test rows had their twin in training, and the report
  said macro recall 0.925 where new patients got 0.696;
- a column holding the label's code: accuracy 1.000, log loss 0, and the endpoint then asked for that column;
- a column with one value in every row, which teaches nothing and which the endpoint still takes.

These are notes, not refusals: a table may hold two patients alike, and only the user knows what a column means.
Every check reads the curated rows only (the accepted ones) and is linear in them but for a sort per number column.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from diagnosa.data.schema import Schema

# A column at least this share of whose values are distinct (a measurement to its last digit, a date; a table of
# patients each written twice has a share of 0.5): two rows equal there, and in every other feature, are one record
# twice rather than two patients alike. Tables of coarse features (scores of 1 to 10, yes/no answers) hold many
# patients alike, and say nothing of the kind (none of the benchmark's 17 real tables gets a note).
DISTINCT_SHARE = 0.3
LABEL_COLUMN_MIN_ROWS = 30  # fewer rows with a value say too little to call a column the label's
LABEL_COLUMN_MIN_COVER = 0.5  # ... and a column with a value in fewer than this share of the rows is no label's copy
EXAMPLES = 3
COPIES_AT_MOST = 3  # rows alike beyond this many are patients alike, not a record written again
TELLING_VALUES = 2  # values only the rows alike hold, in this many columns few rows share: no coincidence
LEAKAGE_KEYS = ("repeated_rows", "label_columns", "constant_columns", "patient_columns",  # the notes' keys
                "rows_without_patient", "patients_but_for_case", "heavy_patients")
# A patient holding this share of the rows or more decides the splits' row shares (its rows go to one split), and
# a window of traffic with its many visits is worth little to the monitor: a placeholder for patients not known?
HEAVY_PATIENT_SHARE = 0.1
# A patient's number over visits: at least this many values, each holding rows next to each other (a file of
# visits lists a patient's together), and at most this share of the rows distinct; beside it, columns of the
# patient (sex, a treatment arm, a baseline age) hold one value within each of its values.
PATIENT_MIN_VALUES = 10
PATIENT_MAX_DISTINCT_SHARE = 0.8
PATIENT_MIN_ADJACENT = 0.9  # the share of its repeated values whose rows are one run
PATIENT_MAX_MEDIAN_ROWS = 20  # rows of a repeated value, the median: visits, not a hospital's patients
# Columns constant within each value: a column derived from the candidate is so by construction (a hospital's
# region, an age's band, a lab's flag: a probe's four false alarms), a patient's own attributes (sex, a treatment
# arm) too. A patient's number has at least two such columns that change from one patient to the next at this
# share of the values' boundaries or more (pbcseq's sex, 88 % women: 21 %); a band of a sorted measurement changes
# at few of them (10 age bands over 60 ages: 9 of 59). A rule asking for one column with nearly a value per patient
# (an age at entry) missed pbcseq once its age was given at each visit (a re-run probe).
PATIENT_MIN_CONSTANT = 2
PATIENT_MIN_CHANGES = 0.15
# A doctor's, a family's, a lab batch's rows have attributes of their own too (a re-run probe's false alarms), but
# they are other people: their measurements vary within a value as much as between values. A patient's visits are
# alike: the share of a measured number's variance between the values (its intraclass correlation), median over
# the numbers that vary within them, is at least this (pbcseq's labs: 0.6 to 0.9).
PATIENT_MIN_ALIKE = 0.3


def _hashable(column: pd.Series) -> pd.Series:
    """A column whose cells may be lists (codes, HPO terms) as something pandas can compare and hash."""
    if column.dtype == object:
        return column.map(lambda cell: tuple(cell) if isinstance(cell, (list, np.ndarray)) else cell)
    return column


def repeated_rows(curated: pd.DataFrame, features: Sequence[str], target: str, lines: Sequence[int]
                  ) -> dict[str, Any] | None:
    """Rows repeating an earlier row's every feature and its label where, in a column whose values few rows share,
    they hold a value no other row holds: how many, those columns, and a few pairs of their lines (``lines``: each
    curated row's line in the file). None when there are none. Rows alike in common values (a viral load of 0, a
    troponin of 0.01), or with other labels, are patients alike, not one written twice (a re-run probe: the note
    told such rows "keep one")."""
    present = [name for name in features if name in curated.columns]
    if not present or len(curated) < 2:
        return None
    frame = curated[[*present, target]]
    lists = [name for name in present if frame[name].dtype == object]  # only they may hold lists
    if lists:
        frame = frame.assign(**{name: _hashable(frame[name]) for name in lists})
    if not frame.duplicated().any():  # the common case, at the cost of one hash of the rows
        return None
    held, distinct = frame[present].notna().sum(), frame[present].nunique()
    telling = [name for name in present if held[name] >= 2 and distinct[name] >= DISTINCT_SHARE * held[name]]
    if not telling:
        return None
    keys = pd.util.hash_pandas_object(frame.astype(str), index=False)
    group_size = keys.map(keys.value_counts())
    # the row's values, in two telling columns, are held by its group's rows alone, and they are a few: 30 healthy
    # patients with no viral load and the same troponin are patients alike, and so are two rows sharing one value
    # measured to three decimals (in a table of one or two such columns, chance made such pairs: a probe)
    own_values = pd.concat([frame[name].notna() & (frame[name].map(frame[name].value_counts()) == group_size)
                            for name in telling], axis=1).sum(axis=1)
    own_value = (own_values >= TELLING_VALUES) & (group_size <= COPIES_AT_MOST)
    copies = keys.duplicated(keep="first") & own_value
    if not copies.any():
        return None
    first_line: dict[int, int] = {}
    for position, key in enumerate(keys.tolist()):
        first_line.setdefault(key, lines[position])
    pairs = [[first_line[keys.iloc[p]], lines[p]] for p in np.flatnonzero(copies.to_numpy())[:EXAMPLES].tolist()]
    return {"rows": int(copies.sum()), "columns": telling, "example_lines": pairs}


def label_columns(curated: pd.DataFrame, schema: Schema) -> dict[str, int]:
    """Feature columns that tell every row's label: each value goes with one label (or, for numbers, each label
    holds one interval of them), over at least LABEL_COLUMN_MIN_ROWS rows and two labels → the number of distinct
    values. The label under another name, or a value known only once the diagnosis is made."""
    target_codes, target_labels = pd.factorize(curated[schema.target].astype(str))
    found = {}
    for f in schema.fields:
        if f.role != "feature" or f.name not in curated.columns or f.type in ("hpo_terms", "codes"):
            continue
        column = curated[f.name]
        known = column.notna().to_numpy()
        if known.sum() < max(LABEL_COLUMN_MIN_ROWS, LABEL_COLUMN_MIN_COVER * len(curated)):
            continue
        labels = target_codes[known]
        if len(np.unique(labels)) < 2:
            continue
        # Arrays, not a frame per column: 2,000 columns took 2 s, three times the rest of the ingest.
        if f.type in ("number", "integer"):
            # Each label one interval of the numbers, no value shared by two: the labels' [least, greatest] are
            # disjoint, and a threshold tells them apart.
            values = column.to_numpy(dtype=float, na_value=np.nan)[known]
            ranges = sorted((values[labels == code].min(), values[labels == code].max()) for code in np.unique(labels))
            if all(later[0] > earlier[1] for earlier, later in zip(ranges, ranges[1:])):
                found[f.name] = int(len(np.unique(values)))
            continue
        codes = pd.factorize(column[known].astype(str))[0]
        distinct = int(codes.max()) + 1
        if distinct >= len(codes):
            continue  # a text every row has its own of (an identifier) goes with one label each, and tells nothing
        if len(np.unique(codes.astype(np.int64) * len(target_labels) + labels)) == distinct:  # one label per value
            found[f.name] = distinct
    return found


def constant_columns(curated: pd.DataFrame, features: Sequence[str]) -> list[str]:
    """Feature columns with one value in every row that has one (and a value in at least one row)."""
    return [name for name in features if name in curated.columns
            and _hashable(curated[name]).nunique() == 1 and curated[name].notna().all()]


def patient_columns(curated: pd.DataFrame, schema: Schema, excluded: pd.DataFrame | None = None
                    ) -> dict[str, dict[str, Any]]:
    """Columns that look like a patient's number over several rows (visits) when the dataset names no patient
    column: name → {values, most rows of one value, the columns constant within each value}. Split by row, a
    patient's visits land in training and in test. A table sorted by a measurement (age) holds runs of equal
    values too, but the patient's other columns (sex) change within them; a column derived from it (an age band)
    does not: a patient's number has two that change from one patient to the next (``PATIENT_MIN_CHANGES``).

    ``excluded``: the config's excluded columns' cells, row for row with ``curated`` (empty text: missing), looked at
    too: a patient number put in ``exclude`` leaves the split by row as leaky as one kept (a probe: +0.25 macro
    recall on test); its entry says ``"excluded": true``."""
    if schema.patient_column is not None or len(curated) < 2 * PATIENT_MIN_VALUES:
        return {}
    skip = {schema.id_column, schema.target, schema.slice_column, schema.group_column}
    names = [f.name for f in schema.fields if f.role in ("feature", "metadata") and f.name not in skip
             and f.type in ("string", "category", "integer", "number") and f.name in curated.columns]
    outside = {} if excluded is None else {
        name: excluded[name].reset_index(drop=True).replace("", np.nan) for name in excluded.columns
        if name not in curated.columns}
    found: dict[str, dict[str, Any]] = {}
    for name in [*_repeating(curated, names), *outside]:
        column = outside[name] if name in outside else curated[name]
        held = column.notna().to_numpy()
        if held.sum() < 2 * PATIENT_MIN_VALUES:  # (no list column among them: only code and term columns hold lists)
            continue
        codes = pd.factorize(column[held])[0]
        counts = np.bincount(codes)
        repeated = counts >= 2
        if len(counts) < PATIENT_MIN_VALUES or len(counts) > PATIENT_MAX_DISTINCT_SHARE * len(codes) \
                or repeated.sum() < PATIENT_MIN_VALUES // 2 or np.median(counts[repeated]) > PATIENT_MAX_MEDIAN_ROWS:
            continue
        runs = np.bincount(codes[np.r_[True, codes[1:] != codes[:-1]]], minlength=len(counts))
        if (runs[repeated] == 1).mean() < PATIENT_MIN_ADJACENT:
            continue
        # Only now (rarely) a pass over the other columns: constant within each value, and not everywhere.
        constant = []
        boundaries = np.flatnonzero(codes[1:] != codes[:-1])  # between one value's run and the next
        for other in names:
            if other == name:
                continue
            values = pd.Series(curated[other].to_numpy()[held])
            if values.groupby(codes).nunique(dropna=True).max() > 1 or values.nunique(dropna=True) < 2:
                continue
            before, after = values.iloc[boundaries].to_numpy(), values.iloc[boundaries + 1].to_numpy()
            known = pd.notna(before) & pd.notna(after)
            if known.any() and (before[known] != after[known]).mean() >= PATIENT_MIN_CHANGES:
                constant.append(other)
        if len(constant) >= PATIENT_MIN_CONSTANT and _alike_within(curated, names, name, held, codes) >= PATIENT_MIN_ALIKE:
            found[name] = {"values": int(len(counts)), "most_rows": int(counts.max()), "constant": constant[:EXAMPLES],
                           **({"excluded": True} if name in outside else {})}
    return found


def declared_patients(curated: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """With a patient column: how many rows have no patient (each a patient of its own, so the split cannot keep
    them with their other rows), the patients holding a tenth of the rows or more, and the patients written as another
    one but for case (``P007``, ``p007``: two patients to the split), with a few examples."""
    if schema.patient_column is None or schema.patient_column not in curated.columns:
        return {}
    column = curated[schema.patient_column]
    notes: dict[str, Any] = {}
    missing = int(column.isna().sum())
    if missing:
        notes["rows_without_patient"] = missing
    counts = column.dropna().astype(str).value_counts()
    heavy = counts[counts >= max(2, HEAVY_PATIENT_SHARE * len(column))]
    if len(heavy):
        notes["heavy_patients"] = {"patients": int(len(heavy)), "rows": int(heavy.sum()), "of_rows": int(len(column)),
                                   "examples": [[str(name), int(n)] for name, n in heavy.iloc[:EXAMPLES].items()]}
    names = pd.Series(column.dropna().astype(str).unique())
    folded = names.str.casefold()
    alike = names[folded.duplicated(keep=False)]
    if len(alike):
        groups = alike.groupby(folded[alike.index]).agg(list)
        notes["patients_but_for_case"] = {"patients": int(len(groups)),
                                          "examples": [sorted(g) for g in groups.iloc[:EXAMPLES]]}
    return notes


def _alike_within(curated: pd.DataFrame, names: list[str], name: str, held: np.ndarray, codes: np.ndarray) -> float:
    """The median, over the number columns that vary within ``codes``' values (of the rows ``held``, values of two
    rows or more), of the share of their variance that lies between the values (the intraclass correlation); 0 when
    no number varies within them."""
    repeated = np.bincount(codes)[codes] >= 2
    shares = []
    for other in names:
        if other == name or curated[other].dtype.kind not in "iuf":
            continue
        values = curated[other].to_numpy(dtype=float, na_value=np.nan)[held]
        keep = repeated & ~np.isnan(values)
        if keep.sum() < 2 * PATIENT_MIN_VALUES:
            continue
        # The one-way ANOVA estimate, ICC(1): 1 - within / total is biased up for small groups (about 1/3 for
        # random values in groups of 3).
        groups, index = np.unique(codes[keep], return_inverse=True)
        v, k, n = values[keep], len(groups), int(keep.sum())
        sizes = np.bincount(index)
        means = np.bincount(index, weights=v) / sizes
        within = float(((v - means[index]) ** 2).sum()) / (n - k)
        between = float((sizes * (means - v.mean()) ** 2).sum()) / (k - 1)
        n0 = (n - float((sizes ** 2).sum()) / n) / (k - 1)
        if within > 1e-9 * float(v.var()):  # constant within every value (a patient's own column) is no measure
            shares.append((between - within) / (between + (n0 - 1) * within))
    return float(np.median(shares)) if shares else 0.0


def _repeating(curated: pd.DataFrame, names: list[str]) -> list[str]:
    """``names`` less the number columns too distinct to be a patient's number (one sort of them all: a column at
    a time, 2,000 measured columns cost a tenth of a second)."""
    numbers = [name for name in names if curated[name].dtype.kind in "iuf"]
    if not numbers:
        return names
    values = np.sort(curated[numbers].to_numpy(dtype=float, na_value=np.nan), axis=0)  # missing values sort last
    held = (~np.isnan(values)).sum(axis=0)
    distinct = held - (values[1:] == values[:-1]).sum(axis=0)
    too_distinct = {name for name, d, h in zip(numbers, distinct, held) if d > PATIENT_MAX_DISTINCT_SHARE * h}
    return [name for name in names if name not in too_distinct]


def leakage_notes(curated: pd.DataFrame, schema: Schema, lines: Sequence[int],
                  excluded: pd.DataFrame | None = None) -> dict[str, Any]:
    """What the manifest and the ingestion report say of ``curated`` (only what was found); ``excluded``: the
    excluded columns' cells, row for row (``patient_columns``)."""
    features = schema.features()
    notes: dict[str, Any] = {}
    repeated = repeated_rows(curated, features, schema.target, lines)
    if repeated:
        notes["repeated_rows"] = repeated
    told = label_columns(curated, schema)
    if told:
        notes["label_columns"] = told
    constant = constant_columns(curated, features)
    if constant:
        notes["constant_columns"] = constant
    patients = patient_columns(curated, schema, excluded)
    if patients:
        notes["patient_columns"] = patients
    return notes | declared_patients(curated, schema)
