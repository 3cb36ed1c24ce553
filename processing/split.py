"""Train / validation / test split: stratified by class, orphan diseases spread over all three.

Patients are split by class with the fractions asked. Orphan-disease patients are placed first,
disease by disease: a disease with three or more
patients gets at least one in each split, a disease with two gets one in train and one in test,
a lone patient goes to train — so the test split measures rare diseases the model has seen a few
cases of, which is the realistic setting for an orphan disease. The other patients of the class
then fill each split to its share. A patient id is never in two splits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from diagnosa.data.schema import Schema, too_small_classes

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.7, 0.2, 0.1)
DISEASE_COLUMN = "disease_id"


class SplitError(ValueError):
    """The data cannot be split as asked; the message names the class or parameter."""


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [("train", self.train), ("validation", self.validation), ("test", self.test)]


def _allocate(n: int, fractions: np.ndarray) -> np.ndarray:
    """How many of n rows go to each split: largest remainders, at least one each when n >= 3."""
    raw = n * fractions
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts))[: n - counts.sum()]:
        counts[i] += 1
    if n >= len(fractions):
        for i in np.flatnonzero(counts == 0):
            counts[int(np.argmax(counts))] -= 1
            counts[i] = 1
    return counts


def split_dataset(frame: pd.DataFrame, schema: Schema, *, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
                  seed: int = 0) -> Splits:
    target, id_column, slice_column = schema.target, schema.id_column, schema.slice_column
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr <= 0).any() or abs(fr.sum() - 1.0) > 1e-9:
        raise SplitError(f"split fractions must be three positive numbers summing to 1, got {list(fractions)}")
    for column in (target, id_column):
        if column not in frame.columns:
            raise SplitError(f"the dataset has no column '{column}'")
    if frame[id_column].duplicated().any():
        dup = frame.loc[frame[id_column].duplicated(), id_column].iloc[0]
        raise SplitError(f"id '{dup}' appears more than once: one patient cannot be split")
    unknown = sorted(set(frame[target].dropna()) - set(schema.labels))
    if unknown:
        raise SplitError(f"labels not in the schema's label set: {unknown}")
    problem = too_small_classes(frame[target].value_counts().to_dict(), schema.labels)
    if problem:
        raise SplitError(problem)

    rng = np.random.default_rng(seed)
    assignment = np.full(len(frame), -1)
    positions = np.arange(len(frame))
    # Orphan diseases (the built-in cohort's slice) are placed disease by disease; other slices have no
    # disease column and are stratified like everyone else.
    is_orphan = (frame[slice_column].fillna(False).to_numpy(dtype=bool)
                 if slice_column and slice_column in frame.columns else np.zeros(len(frame), dtype=bool))
    by_disease = is_orphan & (frame[DISEASE_COLUMN].notna().to_numpy() if DISEASE_COLUMN in frame.columns else False)

    if by_disease.any():
        diseases = frame.loc[by_disease, DISEASE_COLUMN].to_numpy()
        for disease in np.unique(diseases):
            members = rng.permutation(positions[by_disease][diseases == disease])
            if len(members) == 1:
                plan = [0]
            elif len(members) == 2:
                plan = [0, 2]
            else:
                plan = np.repeat([0, 1, 2], _allocate(len(members), fr)).tolist()
            assignment[members] = plan

    # The other patients of each class fill each split up to the class's share, so the class mix
    # stays stratified even though orphan diseases were placed first.
    labels = frame[target].astype(str).to_numpy()
    for label in np.unique(labels):
        in_class = labels == label
        placed = np.bincount(assignment[in_class & (assignment >= 0)], minlength=3)
        members = rng.permutation(positions[in_class & (assignment < 0)])
        need = np.maximum(_allocate(int(in_class.sum()), fr) - placed, 0).astype(float)
        share = need / need.sum() if need.sum() > 0 else fr
        assignment[members] = np.repeat([0, 1, 2], _allocate(len(members), share))

    parts = [frame.iloc[np.flatnonzero(assignment == i)].reset_index(drop=True) for i in range(3)]
    for name, part in zip(SPLITS, parts):
        missing = [label for label in schema.labels if not (part[target] == label).any()]
        if missing:
            raise SplitError(f"the {name} split would have no rows of class {missing}")
    return Splits(*parts)
