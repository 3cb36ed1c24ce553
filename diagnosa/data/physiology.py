"""Vital signs and lab tests: units, healthy reference values and the limits of the possible.

One table serves the generator (how healthy values are drawn), the ingestion schema (what is
impossible) and the data card (units). Reference values are typical adult values (Merck Manual
Professional, "Normal Laboratory Values"); the possible limits are deliberately wide: a value outside
them is a recording error, not a sick patient.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    name: str
    unit: str
    kind: str  # "vital" or "lab"
    mean: float  # healthy adult reference
    sd: float
    decimals: int
    low: float  # below this the value is impossible
    high: float  # above this the value is impossible
    lognormal: bool = False  # right-skewed analytes (CRP, ALT) are drawn on a log scale
    label: str = ""


VARIABLES: tuple[Variable, ...] = (
    Variable("temperature_c", "°C", "vital", 36.8, 0.3, 1, 30.0, 45.0, label="Temperature"),
    Variable("heart_rate_bpm", "beats/min", "vital", 72, 10, 0, 20, 250, label="Heart rate"),
    Variable("respiratory_rate_bpm", "breaths/min", "vital", 14, 2, 0, 4, 70, label="Respiratory rate"),
    Variable("systolic_bp_mmhg", "mmHg", "vital", 120, 12, 0, 50, 260, label="Systolic blood pressure"),
    Variable("diastolic_bp_mmhg", "mmHg", "vital", 78, 8, 0, 20, 160, label="Diastolic blood pressure"),
    Variable("spo2_pct", "%", "vital", 97.5, 1.2, 0, 50, 100, label="SpO2"),
    Variable("wbc_10e9_l", "10^9/L", "lab", 7.0, 1.8, 1, 0.1, 200, label="White blood cells"),
    Variable("crp_mg_l", "mg/L", "lab", 1.5, 0.9, 1, 0.0, 600, lognormal=True, label="C-reactive protein"),
    Variable("hemoglobin_g_dl", "g/dL", "lab", 14.0, 1.1, 1, 3.0, 25.0, label="Haemoglobin"),
    Variable("platelets_10e9_l", "10^9/L", "lab", 250, 55, 0, 1, 2000, label="Platelets"),
    Variable("glucose_mg_dl", "mg/dL", "lab", 92, 10, 0, 10, 1500, label="Glucose"),
    Variable("hba1c_pct", "%", "lab", 5.3, 0.35, 1, 3.0, 20.0, label="HbA1c"),
    Variable("creatinine_mg_dl", "mg/dL", "lab", 0.9, 0.15, 2, 0.1, 25.0, label="Creatinine"),
    Variable("alt_u_l", "U/L", "lab", 20, 0.35, 0, 1, 10000, lognormal=True, label="ALT"),
    Variable("sodium_mmol_l", "mmol/L", "lab", 140, 2.5, 0, 100, 180, label="Sodium"),
    Variable("potassium_mmol_l", "mmol/L", "lab", 4.2, 0.35, 1, 1.5, 9.0, label="Potassium"),
)
BY_NAME: dict[str, Variable] = {v.name: v for v in VARIABLES}
VITALS: tuple[str, ...] = tuple(v.name for v in VARIABLES if v.kind == "vital")
LABS: tuple[str, ...] = tuple(v.name for v in VARIABLES if v.kind == "lab")

AGE_RANGE = (0, 120)
SEXES = ("F", "M")
