"""The five diagnostic categories, in clinical order (the order ordinal metrics use)."""
from __future__ import annotations

HEALTHY = "NO ENFERMO"
MILD = "ENFERMEDAD LEVE"
ACUTE = "ENFERMEDAD AGUDA"
CHRONIC = "ENFERMEDAD CRÓNICA"
TERMINAL = "ENFERMEDAD TERMINAL"

CATEGORIES: tuple[str, ...] = (HEALTHY, MILD, ACUTE, CHRONIC, TERMINAL)
DISEASE_CATEGORIES: tuple[str, ...] = CATEGORIES[1:]
