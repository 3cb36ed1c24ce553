"""Row-level validation of raw data against schema fields, vectorised per column.

Input is a frame of raw values as they arrived: Python objects parsed from JSON (``text=False``) or
the exact strings of a CSV (``text=True``). Output is the typed frame and, for every row that breaks
a rule, the list of reasons, each naming the field, the value and the rule.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd

from diagnosa.data.hpo import HPO_ID, Ontology
from diagnosa.data.schema import EXACT_INTEGER_LIMIT, FEATURE_NUMBER_MAX, Field, clean_text, near_spelling, number_text
from diagnosa.text import some_of

# Compared lower-cased; Spanish as well ('no' is both): a spreadsheet in Spanish writes VERDADERO/FALSO, a hospital
# system S/N, PostgreSQL's CSV export t/f. Only for a column declared boolean (or the slice_column): never inferred.
TRUE_TEXT = {"true", "1", "yes", "sí", "si", "verdadero", "t", "y", "s"}
FALSE_TEXT = {"false", "0", "no", "falso", "f", "n"}
BOOLEAN_SPELLINGS = "true/false, yes/no, sí/no, verdadero/falso, 1/0, t/f, y/n, s/n; any capitals"


def boolean_text(text: str) -> bool | None:
    """The truth a text cell spells ('Sí ', 'VERDADERO', '0'), as ingestion and the endpoint read it; None for none."""
    spelled = clean_text(text).lower()
    return True if spelled in TRUE_TEXT else False if spelled in FALSE_TEXT else None


CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:_-]{0,31}$")  # ICD-10, ORPHA:…, OMIM:… and the like
LIST_SEPARATOR = ";"  # how a CSV cell holds a list


def clip(text: str, limit: int = 160) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis: an error quotes what it refuses, never megabytes of it."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` clipped to ``limit`` characters (:func:`clip`): how an error message quotes a value it refuses
    (ingestion's, the CLI's, the endpoint's). Built from the value's first ``limit`` characters and items only: the
    repr of a 6 MB list (25 MB) made a 25 MB 400, and costs its memory even when cut afterwards. A text clipped keeps
    its closing quote, so a reader of the message sees where it ends (the errors stream's redaction,
    inference/capture.py, removes quoted literals)."""
    text = _repr_head(value, limit + 1)
    if len(text) > limit and isinstance(value, str):
        return clip(text, limit - 1) + text[0]
    return clip(text, limit)


def _repr_head(value: Any, budget: int) -> str:
    """``repr(value)``, or a text of at least ``budget`` characters it starts with (a JSON value: dicts, lists,
    strings, numbers). Each level of nesting takes one character of the budget, so a deep value stops early too."""
    if isinstance(value, str):
        head = value[:budget]
        # repr quotes with ' unless the text holds ' and no ": the whole text decides, so its quote marks, where
        # only the rest holds them, go with the head (the clip cuts them off again).
        head += "".join(q for q in "'\"" if q not in head and q in value)
        return repr(head)
    if isinstance(value, (list, dict)):
        items = value.items() if isinstance(value, dict) else value
        opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
        parts: list[str] = []
        used = 1
        for item in items:
            if used > budget:  # cut before this item, after the separator the repr has next
                return opening + ", ".join(parts) + ", "
            part = (f"{_repr_head(item[0], budget - used)}: {_repr_head(item[1], budget - used)}"
                    if isinstance(value, dict) else _repr_head(item, budget - used))
            parts.append(part)
            used += len(part) + 2
        return opening + ", ".join(parts) + closing
    return repr(value)


def _missing(col: pd.Series, text: bool) -> np.ndarray:
    """Where a cell holds nothing: None/NaN, or an empty text. Arrays, not Series: a table 20,000 columns wide runs
    this per column, and each pandas operation costs ~0.1 ms however few its rows."""
    values = col.to_numpy()  # a float column stays floats (no copy); text is objects
    missing = pd.isna(values)
    if text and values.dtype == object:
        missing |= values == ""
    return missing


def _type_mask(col: pd.Series, allowed: tuple[type, ...]) -> pd.Series:
    """True where the value is of an allowed Python type (missing values are judged elsewhere)."""
    if col.dtype == object:
        return col.map(lambda v: type(v) in allowed)
    if pd.api.types.is_bool_dtype(col):
        return pd.Series(bool in allowed, index=col.index)
    if pd.api.types.is_numeric_dtype(col):
        return pd.Series(float in allowed or int in allowed, index=col.index)
    return pd.Series(str in allowed, index=col.index)  # pandas string dtype



def _case_hint(value: object, allowed: Sequence[str]) -> str:
    """'; 'leve' but for case' when the value is an allowed one written in other capitals or spaces (a no-break
    space where a space shows): both are meaningful, so it is not read as that one."""
    near = near_spelling(value, allowed) if isinstance(value, str) else None
    return f"; {near[0]!r} {near[1]}" if near else ""


# A number this many times its column's spread away from the column's median is no measurement: a sentinel code
# (999999999, 9.99e20) or a typo. One such cell among 800 made the scaler's spread so wide that every other value of
# the column became one 32-bit float, for every model family (a probe, session 68: fresh-data macro recall 0.748 ->
# 0.615, nothing said); four feedback rows of that kind wrecked a retraining. The spread is the range of the middle
# 98 % of the values (1st to 99th percentile), not the interquartile range: a lab whose values mostly sit at its
# detection limit has almost no interquartile range, and its most viraemic patients (hepatitis B DNA of 1e9 to 1e10
# IU/mL, 68 of 2,000 rows) were quarantined as implausible (the re-run probe).
IMPLAUSIBLE_SPREADS = 1e6
IMPLAUSIBLE_MIN_VALUES = 20  # fewer values than this say too little of a column's spread to judge one


# A number column's (median, low, high, least, greatest): low and high bound the range its spread is measured on.
Spread = tuple[float, float, float, float, float]


def bounded_by_config(f: Field) -> bool:
    """A column whose config sets a ``min`` or ``max``: the user's to bound, never judged implausible."""
    return f.min is not None or f.max is not None


def number_spread(values: np.ndarray) -> Spread | None:
    """(median, low, high, least, greatest) of the finite ``values``, low and high their 1st and 99th percentiles;
    None for fewer than IMPLAUSIBLE_MIN_VALUES values, or no spread at all."""
    values = values[np.isfinite(values)]
    if len(values) < IMPLAUSIBLE_MIN_VALUES:
        return None
    # Percentiles of values held, never interpolated toward the extremes: of 73 values, an interpolated 99th
    # percentile lies 72 % of the way to the greatest, and one 1e12 among them made its own spread.
    low, high = np.percentile(values, 1, method="higher"), np.percentile(values, 99, method="lower")
    median = np.median(values)
    if not high > low:
        return None
    return float(median), float(low), float(high), float(values.min()), float(values.max())


def number_spreads(frame: pd.DataFrame, fields: Sequence[Field]) -> dict[str, Spread]:
    """Each feature number column of ``frame`` that no config bounds → its :func:`number_spread`, where it has one:
    what a model records of its training rows, so that the endpoint refuses what ingestion would quarantine."""
    spreads = {}
    for f in fields:
        if f.type in ("number", "integer") and f.role == "feature" and not bounded_by_config(f) and f.name in frame:
            spread = number_spread(pd.to_numeric(frame[f.name], errors="coerce").to_numpy(dtype=float, na_value=np.nan))
            if spread is not None:
                spreads[f.name] = spread
    return spreads


def implausible_bounds(spread: Spread) -> tuple[float, float]:
    """The values a column of this spread holds plausibly: within IMPLAUSIBLE_SPREADS spreads of its median."""
    median, low, high = spread[:3]
    return median - IMPLAUSIBLE_SPREADS * (high - low), median + IMPLAUSIBLE_SPREADS * (high - low)


def served_bounds(spread: Spread) -> tuple[float, float]:
    """What the endpoint takes of a column whose training rows had this spread: :func:`implausible_bounds`, and
    every value within the training rows' own range widened by its width on each side. The spread is the training
    split's: a lab at its detection limit but for 5 patients of 400 (viral loads of 3e9 to 9e9) had 3 of them in
    training, a spread of almost none, and its endpoint refused the very values it was trained on (a probe: 42 % of
    random splits)."""
    low, high = implausible_bounds(spread)
    least, greatest = spread[3], spread[4]
    return min(low, least - (greatest - least)), max(high, greatest + (greatest - least))


def implausible_reason(name: str, value: float, spread: Spread, *, training: bool = False) -> str:
    """Why ``value`` of column ``name`` is refused: by ingestion (the column's own spread), or by the endpoint
    (``training``: the spread of the model's training values)."""
    median, low, high, least, greatest = spread
    times = f"over {IMPLAUSIBLE_SPREADS:.0e} times"
    if training:
        return (f"implausible value {value:.6g} ({times} the spread of the model's training values from their median, "
                f"{median:.3g}, and far beyond their range, {least:.3g} to {greatest:.3g}; their spread: {low:.3g} to "
                f"{high:.3g}): a code for 'unknown', or a typo? Correct it, or leave the field out")
    return (f"implausible value for '{name}': {value:.6g} ({times} the column's spread from its median, {median:.3g}; "
            f"its spread: {low:.3g} to {high:.3g}): a code for 'unknown', or a typo? Correct it or empty the cell; "
            f"to keep such values, give [columns.{name}] a min and a max")


def implausible_numbers(typed: pd.DataFrame, fields: Sequence[Field], refused: Collection[int] = ()
                        ) -> dict[int, list[str]]:
    """Per row position, the feature numbers of ``typed`` (validate_frame's) beyond :func:`implausible_bounds` of
    their column's :func:`number_spread`, judged on the rows not ``refused``. A column :func:`bounded_by_config`, or
    whose values have no spread, is left alone."""
    reasons: dict[int, list[str]] = defaultdict(list)
    for f in fields:
        if f.type not in ("number", "integer") or f.role != "feature" or bounded_by_config(f) or f.name not in typed:
            continue
        values = pd.to_numeric(typed[f.name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        judged = ~np.isnan(values)
        judged[list(refused)] = False
        spread = number_spread(values[judged])
        if spread is None:
            continue
        low, high = implausible_bounds(spread)
        with np.errstate(invalid="ignore"):
            far = judged & ((values < low) | (values > high))
        for pos in np.flatnonzero(far).tolist():
            reasons[pos].append(implausible_reason(f.name, values[pos], spread))
    return dict(reasons)


def validate_frame(raw: pd.DataFrame, fields: Sequence[Field], *, text: bool, ontology: Ontology | None = None,
                   decimal: str = ".") -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """Typed columns for ``fields`` and, per failing row position, why it fails. ``decimal``: the decimal mark of
    number cells read as text (``schema.number_text``)."""
    expected_number = "a number" if decimal == "." else f"a number written with a decimal {decimal!r}"
    reasons: dict[int, list[str]] = defaultdict(list)
    n = len(raw)
    positions = np.arange(n)

    def flag(mask: pd.Series | np.ndarray, message) -> None:
        hits = np.flatnonzero(np.asarray(mask, dtype=bool))
        for pos in hits:
            reasons[int(pos)].append(message(int(pos)))

    columns = dict(raw.set_axis(positions, axis=0).items())  # once: a table may have 20,000 columns
    known = {f.name for f in fields}
    for column, values in columns.items():
        if column not in known:
            flag(~_missing(values, text), lambda pos, c=column: f"unknown field '{c}'")

    typed: dict[str, pd.Series | np.ndarray] = {}
    for f in fields:
        col = columns[f.name] if f.name in columns else pd.Series([None] * n, index=positions, dtype=object)
        missing = _missing(col, text)
        if f.required:
            flag(missing, lambda pos, f=f: f"missing required field '{f.name}'")
        if f.type in ("number", "integer"):
            typed[f.name] = _numbers(f, col, ~missing, text, decimal, expected_number, flag)
            continue
        present = pd.Series(~missing, index=col.index)
        if f.type in ("string", "text", "category"):
            wrong = present & ~_type_mask(col, (str,)) if not text else pd.Series(False, index=col.index)
            flag(wrong, lambda pos, f=f, c=col: f"wrong type for '{f.name}': expected a string, got {shown(c[pos])}")
            strings = col.where(present & ~wrong).astype(object)
            if f.type == "category" and f.values is not None:
                unknown = present & ~wrong & ~strings.isin(f.values)
                what = "label" if f.role == "target" else f"value for '{f.name}'"
                flag(unknown, lambda pos, c=col, w=what, v=f.values:
                     f"unknown {w}: {shown(c[pos])} (expected one of: {some_of(v)}){_case_hint(c[pos], v)}")
            if f.role == "id":
                blank = present & ~wrong & strings.astype(str).str.strip().eq("")
                flag(blank, lambda pos, f=f: f"empty identifier in '{f.name}'")
            typed[f.name] = strings

        elif f.type == "date":
            wrong = present & ~_type_mask(col, (str,)) if not text else pd.Series(False, index=col.index)
            parsed = pd.to_datetime(col.where(present & ~wrong), format="%Y-%m-%d", errors="coerce")
            invalid = present & ~wrong & parsed.isna()
            flag(wrong | invalid, lambda pos, f=f, c=col: f"invalid date for '{f.name}': {shown(c[pos])} (expected YYYY-MM-DD)")
            typed[f.name] = col.where(present & ~wrong & ~invalid).astype(object)

        elif f.type == "boolean":
            if text:
                lowered = col.astype(object).where(present, "").astype(str).str.strip().str.lower()
                truth = lowered.isin(TRUE_TEXT)
                wrong = present & ~truth & ~lowered.isin(FALSE_TEXT)
            else:
                wrong = present & ~_type_mask(col, (bool,))
                truth = col.where(present & ~wrong, False).astype(bool)
            expected = f"true or false ({BOOLEAN_SPELLINGS})" if text else "true or false"
            flag(wrong, lambda pos, f=f, c=col, e=expected: f"wrong type for '{f.name}': expected {e}, got {shown(c[pos])}")
            typed[f.name] = truth.astype("boolean").where(present & ~wrong)

        else:  # hpo_terms, codes: lists of strings (a ';'-separated cell in a CSV)
            if text:
                lists = col.astype(object).where(present, "").map(
                    lambda s: [x.strip() for x in str(s).split(LIST_SEPARATOR) if x.strip()])
                wrong = pd.Series(False, index=col.index)
            else:
                wrong = present & ~col.map(lambda v: isinstance(v, list) and all(type(x) is str for x in v))
                lists = col.where(present & ~wrong).map(lambda v: v if isinstance(v, list) else [])
            flag(wrong, lambda pos, f=f, c=col: f"wrong type for '{f.name}': expected a list of strings, got {shown(c[pos])}")
            flat = lists.explode().dropna()
            if f.type == "hpo_terms":
                malformed = ~flat.astype(str).str.fullmatch(HPO_ID.pattern)
                unknown = ~malformed & ~flat.isin(ontology.known_terms) if ontology is not None else malformed & False
                for pos, term in zip(flat.index[malformed], flat[malformed]):  # (row position, term)
                    reasons[int(pos)].append(f"malformed HPO id in '{f.name}': {shown(term)} (expected HP:nnnnnnn)")
                for pos, term in zip(flat.index[unknown], flat[unknown]):
                    reasons[int(pos)].append(f"unknown HPO term in '{f.name}': '{term}'")
                if ontology is not None and ontology.alt_ids:
                    lists = lists.map(lambda terms: [ontology.primary(t) for t in terms])
            else:
                malformed = ~flat.astype(str).str.fullmatch(CODE.pattern)
                for pos, code in zip(flat.index[malformed], flat[malformed]):
                    reasons[int(pos)].append(f"malformed code in '{f.name}': {shown(code)}")
            typed[f.name] = lists

    # From arrays: a frame of 20,000 Series aligns each one (~8 times slower).
    frame = pd.DataFrame({name: column.array if isinstance(column, pd.Series) else column
                          for name, column in typed.items()}, index=positions)
    return frame, dict(reasons)


def _numbers(f: Field, col: pd.Series, here: np.ndarray, text: bool, decimal: str, expected: str,
             flag: Callable[[Any, Callable[[int], str]], None]) -> pd.Series | np.ndarray:
    """A number field's floats, an integer field's Int64 Series (``here``: where a cell is present); the wrong
    cells flagged. On numpy arrays (see ``_missing``)."""
    if text:
        cells = col.to_numpy(dtype=object, copy=True)
        cells[~here] = None
        if decimal != ".":
            cells = np.array([number_text(v, decimal) if isinstance(v, str) else v for v in cells], dtype=object)
        number = np.asarray(pd.to_numeric(cells, errors="coerce"), dtype=float)
        wrong = here & np.isnan(number)
    else:
        wrong = here & ~_type_mask(col, (int, float)).to_numpy(dtype=bool)
        number = np.asarray(pd.to_numeric(col.where(pd.Series(~wrong & here, index=col.index)), errors="coerce"),
                            dtype=float)
    flag(wrong, lambda pos: f"wrong type for '{f.name}': expected {expected}, got {shown(col.iloc[pos])}")
    with np.errstate(invalid="ignore"):
        infinite = here & ~wrong & np.isinf(number)
        flag(infinite, lambda pos: f"not a finite number for '{f.name}': {shown(col.iloc[pos])}")
        huge = here & ~wrong & ~infinite & (np.abs(number) > FEATURE_NUMBER_MAX)
        flag(huge, lambda pos: f"number out of range for '{f.name}': {shown(col.iloc[pos])} (the model's "
             "features are 32-bit floats: -3.4e38 to 3.4e38)")
        number = np.where(infinite | huge, np.nan, number)
        if f.type == "integer":
            known = ~np.isnan(number)
            fractional = known & (number % 1 != 0)
            flag(fractional, lambda pos: f"wrong type for '{f.name}': expected an integer, got {number[pos]}")
            # Read as a float64, an integer from 2^53 on may already be another one (and from 2^63 on no int64).
            inexact = known & (np.abs(number) >= EXACT_INTEGER_LIMIT)
            flag(inexact, lambda pos: f"not an exact integer for '{f.name}': {shown(col.iloc[pos])} (from 2^53 "
                 "on, numbers lose their last digits: an identifier or a code is a string)")
            number = np.where(fractional | inexact, np.nan, number)
        if f.min is not None or f.max is not None:
            low = -np.inf if f.min is None else f.min
            high = np.inf if f.max is None else f.max
            outside = ~np.isnan(number) & ((number < low) | (number > high))
            unit = f" {f.unit}" if f.unit else ""
            flag(outside, lambda pos: f"impossible value for '{f.name}': {number[pos]:g} "
                 f"(possible range {low:g} to {high:g}{unit})")
    return pd.Series(number, index=col.index).astype("Int64") if f.type == "integer" else number
