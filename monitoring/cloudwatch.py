"""The monitoring report as CloudWatch metrics: what the CDK app's drift alarm watches.

``DriftScore`` is the share of monitored features whose verdict is drift, raised to 1.0 when the
report recommends retraining for another reason (a class or the orphan slice failing on live data,
or the predicted-category mix drifting), so one alarm (``DriftScore > threshold``) starts
retraining for any of them. ``RetrainRecommended``, ``DriftedFeatures`` and ``FailingClasses`` are
published next to it for dashboards. Dimension: ``EndpointName``. From doctors' feedback, when the
window has any: ``LiveRecall`` per class (dimensions ``EndpointName`` and ``Class``),
``LiveOrphanMacroRecall`` and ``LiveUnseenOrphanMacroRecall`` (rare diseases the model had no training
patient of), the live counterparts of the pipeline's recall gate.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diagnosa.labels import ascii_words

if TYPE_CHECKING:  # the stubs are a dev dependency; the monitoring job's container has boto3 alone
    from types_boto3_cloudwatch.literals import StandardUnitType
    from types_boto3_cloudwatch.type_defs import DimensionTypeDef, MetricDatumTypeDef

DEFAULT_NAMESPACE = "Diagnosa/Monitoring"
DRIFT_METRIC = "DriftScore"  # what the monitoring job publishes and the stack's drift alarm watches

def drift_score(report: dict[str, Any]) -> float:
    features = report.get("features", [])
    share = len(report.get("drifted_features", [])) / len(features) if features else 0.0
    return 1.0 if report.get("retrain", {}).get("recommended") and not report.get("drifted_features") else share


def class_dimension(label: str) -> DimensionTypeDef:
    """A class's dimension: CloudWatch takes ASCII dimension values only and refuses the whole PutMetricData call
    for one accented label (ENFERMEDAD CRÓNICA: the monitoring job failed, DriftScore went unpublished and the drift
    alarm blind), so a label is written as its recall-threshold parameter spells it (EnfermedadCronica)."""
    return {"Name": "Class", "Value": ascii_words(label)}


def metric_data(report: dict[str, Any], endpoint_name: str) -> list[MetricDatumTypeDef]:
    """``PutMetricData`` entries for one report (timestamped at the end of its window)."""
    from datetime import datetime

    dimensions: list[DimensionTypeDef] = [{"Name": "EndpointName", "Value": endpoint_name}]
    stamp = report["window"].get("end") or report["generated_at"]  # an open window ends when it was read
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    values: dict[str, tuple[float, StandardUnitType]] = {DRIFT_METRIC: (drift_score(report), "None"),
              "RetrainRecommended": (float(bool(report["retrain"]["recommended"])), "None"),
              "DriftedFeatures": (float(len(report["drifted_features"])), "Count"),
              "FailingClasses": (float(len(report["failing_classes"])), "Count")}
    data: list[MetricDatumTypeDef] = [
        {"MetricName": name, "Dimensions": dimensions, "Timestamp": when, "Value": value, "Unit": unit}
        for name, (value, unit) in values.items()]
    quality = report.get("quality") or {}
    for label, c in (quality.get("per_class") or {}).items():
        if c.get("n") and c.get("recall") is not None:  # no feedback for a class: no point, not a zero
            data.append({"MetricName": "LiveRecall", "Dimensions": [*dimensions, class_dimension(label)],
                         "Timestamp": when, "Value": float(c["recall"]), "Unit": "None"})
    for key, metric in (("orphan", "LiveOrphanMacroRecall"), ("orphan_unseen", "LiveUnseenOrphanMacroRecall")):
        value = (quality.get(key) or {}).get("macro_recall")
        if value is not None:
            data.append({"MetricName": metric, "Dimensions": dimensions, "Timestamp": when,
                         "Value": float(value), "Unit": "None"})
    return data


def publish(report: dict[str, Any], endpoint_name: str, namespace: str = DEFAULT_NAMESPACE,
            client: Any = None) -> list[MetricDatumTypeDef]:
    import boto3

    data = metric_data(report, endpoint_name)
    (client or boto3.client("cloudwatch")).put_metric_data(Namespace=namespace, MetricData=data)
    return data
