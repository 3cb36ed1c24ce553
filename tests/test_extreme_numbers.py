"""Numbers at the edge of what the model can compute with, on a dataset of one's own whose config bounds no column.

A probe (session 68) sent a served model `{"f1": 3.4e38}`: a 32-bit float, so the schema accepted it, and the model's
float32 arithmetic overflowed. The endpoint answered 200 with NaN probabilities (bare NaN tokens: not JSON) and the
first label as its category, and capture, monitoring and retraining took the row as a prediction.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from diagnosa.data.ingest import ingest_csv, load_curated
from diagnosa.lake import DataLake
from inference.server import EndpointServer

LABELS = ("a", "b", "c")


def _strict_json(body: bytes) -> object:
    """JSON as RFC 8259 has it: NaN and Infinity are no JSON values (a browser's JSON.parse refuses them)."""
    def refuse(token: str) -> object:
        raise ValueError(f"{token} is not JSON")

    return json.loads(body, parse_constant=refuse)


@pytest.fixture(scope="module")
def unbounded_model(tmp_path_factory, own_dataset, train_model):
    """A logistic regression on two unbounded numbers (no min or max in the config) and a category."""
    folder = tmp_path_factory.mktemp("unbounded")
    rng = np.random.default_rng(4)
    rows = ["pid,f1,f2,ward,label"]
    for i in range(300):
        k = i % 3
        rows.append(f"p{i},{rng.normal(2 * k, 1):.4f},{rng.normal(-k, 1):.4f},{'east' if i % 2 else 'west'},{LABELS[k]}")
    data = own_dataset(folder, "t", "\n".join(rows) + "\n",
                       'name = "t"\nid_column = "pid"\ntarget = "label"\nlabels = ["a", "b", "c"]\n')
    return train_model(folder / "train", data, {"family": "logistic_regression"})


@pytest.fixture(scope="module")
def endpoint(unbounded_model):
    with EndpointServer(str(unbounded_model), endpoint_name="t") as served:
        served.wait_until_ready()
        yield served


@pytest.fixture(scope="module")
def older_endpoint(unbounded_model, tmp_path_factory):
    """The same model as one trained before models recorded their training values' spreads."""
    import shutil

    folder = tmp_path_factory.mktemp("older") / "model"
    shutil.copytree(unbounded_model, folder)
    metadata = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    del metadata["number_spreads"]
    (folder / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    with EndpointServer(str(folder), endpoint_name="t") as served:
        served.wait_until_ready()
        yield served


@pytest.fixture(scope="module")
def vote_endpoint(unbounded_model, train_model, vote_of, tmp_path_factory):
    """A vote of the logistic regression and a random forest fitted on the same rows, as Select builds one."""
    root = tmp_path_factory.mktemp("vote")
    lake = DataLake.from_uri(str(unbounded_model.parent.parent / "lake"))  # where unbounded_model's rows were ingested
    forest = train_model(root / "forest", load_curated(lake, "t"), {"family": "random_forest", "n_estimators": "30"})
    vote = vote_of(root, {"logistic_regression": unbounded_model, "random_forest": forest},
                   {"logistic_regression": 0.5, "random_forest": 0.5})
    with EndpointServer(str(vote), endpoint_name="t") as served:
        served.wait_until_ready()
        yield served


def _post(endpoint, records: list[dict]) -> tuple[int, object]:
    request = urllib.request.Request(f"{endpoint.url}/invocations", data=json.dumps(records).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, _strict_json(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, _strict_json(refused.read())


GOOD = {"pid": "ok", "f1": 2.0, "f2": -1.0, "ward": "east"}


def _refused_then_answered(endpoint, far: dict) -> str:
    """The problem a batch of a good record and ``far`` gets; the good record alone is answered, every probability
    a number."""
    status, answer = _post(endpoint, [GOOD, {**GOOD, "pid": "far", **far}])
    assert status == 400, answer
    [problem] = answer["errors"]
    assert (problem["row"], problem["field"]) == (1, next(iter(far))), answer  # the second record
    status, answer = _post(endpoint, [GOOD])
    assert status == 200
    [prediction] = answer["predictions"]
    assert all(np.isfinite(p) for p in prediction["probabilities"].values())
    assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-5
    return problem["problem"]


@pytest.mark.parametrize("f1", [3.4e38, -3.4e38, 2.5e38, 1e12, -999999999])
def test_a_number_far_beyond_the_training_values_is_refused_as_ingestion_quarantines_it(endpoint, unbounded_model, f1):
    # 1e12 got a confident answer (probability 1.0) from every model family; 3.4e38 a NaN one.
    problem = _refused_then_answered(endpoint, {"f1": f1})
    assert problem.startswith(f"implausible value {f1:.6g} (over 1e+06 times the spread of the model's training values")
    spreads = json.loads((unbounded_model / "metadata.json").read_text(encoding="utf-8"))["number_spreads"]
    assert set(spreads) == {"f1", "f2"}  # the unbounded numbers, as Preprocess measured them on the rows it fitted on
    status, _ = _post(endpoint, [{**GOOD, "f1": 40.0}])  # far outside the training values, but not implausibly
    assert status == 200


def test_a_vote_of_models_refuses_what_its_members_refuse(vote_endpoint):
    # The vote kept a list of its members' metadata that left out the training rows' spreads: it answered 1e12.
    problem = _refused_then_answered(vote_endpoint, {"f1": 1e12})
    assert problem.startswith("implausible value 1e+12 (over 1e+06 times the spread of the model's training values")


@pytest.mark.parametrize("f1", [3.4e38, -3.4e38, 2.5e38])
def test_a_number_the_model_cannot_compute_with_is_refused_naming_it_never_answered_with_nan(older_endpoint, f1):
    # A model trained before spreads were recorded: 3.4e38 overflowed its float32 arithmetic, and the endpoint
    # answered 200 with NaN probabilities (not JSON) and the first label as its category.
    problem = _refused_then_answered(older_endpoint, {"f1": f1})
    assert "too far beyond the values it was trained on" in problem and f"{f1:.6g}" in problem


@pytest.mark.parametrize("value, exact", [(2**53 - 1, True), (-(2**53 - 1), True), (2**53, False), (2**53 + 1, False),
                                          (2**63, False), (1e20, False), (3.4e38, False), (-(2**60), False)])
def test_ingestion_and_the_endpoint_take_the_same_integers(value, exact):
    # Ingestion quarantined an integer column's 2^53 + 1 ("not an exact integer") while the endpoint answered for it:
    # 2^53 + 1, 2^63, 1e20 and 3.4e38 were a patient's age there.
    import pandas as pd

    from diagnosa.data.schema import Field, Schema
    from diagnosa.data.validate import validate_frame
    from inference.schema import RequestSchema

    count = Field("count", "integer")
    schema = Schema("x", (Field("case", "string", role="id"), count,
                          Field("outcome", "category", role="target", values=("a", "b"))), ("a", "b"))
    text = f"{value:.0f}" if isinstance(value, float) else str(value)
    _, ingested = validate_frame(pd.DataFrame({"count": [text]}), [count], text=True)
    requests = RequestSchema(schema)
    for record, as_text in (({"count": value}, False), ({"count": float(value)}, False), ({"count": text}, True)):
        _, problems = requests.validate(0, record, text=as_text)
        assert (problems == []) == exact == (ingested == {}), (record, problems, ingested)
        if not exact:
            assert problems[0].field == "count" and "not an exact integer" in problems[0].problem
            assert "not an exact integer for 'count'" in ingested[0][0]


def _ingest(tmp_path, f1: list[str], extra_config: str = "") -> tuple[object, object]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    rows = ["pid,f1,label"] + [f"p{i},{value},{LABELS[i % 3]}" for i, value in enumerate(f1)]
    (tmp_path / "x.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "x.toml").write_text('name = "x"\nid_column = "pid"\ntarget = "label"\nlabels = ["a", "b", "c"]\n'
                                     + extra_config, encoding="utf-8")
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    report = ingest_csv(lake, tmp_path / "x.csv", tmp_path / "x.toml")
    return report, load_curated(lake, "x")


@pytest.mark.parametrize("sentinel", ["1e12", "999999999", "-3.3e38"])
def test_a_number_no_column_of_measurements_holds_is_quarantined_naming_it_and_the_column_is_kept(tmp_path, sentinel):
    # One such cell among 800 made the scaler's spread so wide that every other value of the column became one
    # 32-bit float in every model family (fresh-data macro recall 0.748 -> 0.615), and nothing said so.
    values = [f"{v:.4f}" for v in np.random.default_rng(1).normal(2, 1, 300)]
    values[6] = sentinel
    report, (curated, manifest) = _ingest(tmp_path, values)
    [source] = report.sources
    assert (source.read, source.accepted, source.quarantined) == (300, 299, 1)
    [(reason, count)] = manifest["quarantine_reasons"].items()
    assert reason == "implausible value for 'f1'" and count == 1
    [entry] = [json.loads(line) for key in manifest["quarantine_keys"]
               for line in (tmp_path / "lake" / key).read_text().splitlines()]
    assert entry["line"] == 8 and entry["raw"]["f1"] == sentinel
    assert f"'f1': {float(sentinel):.6g}" in entry["reasons"][0] and "[columns.f1] a min and a max" in entry["reasons"][0]
    assert curated["f1"].astype("float32").nunique() == 299  # every other value still tells the patients apart


def test_a_column_bounded_by_its_config_or_heavy_tailed_keeps_every_value(tmp_path):
    rng = np.random.default_rng(2)
    heavy = [f"{v:.6g}" for v in rng.lognormal(0, 2.5, 600)]  # ~5,000 spreads at most: a lab value's tail, kept
    assert _ingest(tmp_path / "heavy", heavy)[0].sources[0].quarantined == 0
    # A lab mostly at its detection limit, its most viraemic patients orders of magnitude above (hepatitis B DNA in
    # IU/mL): the interquartile range, the first spread used, has almost none, and those patients were quarantined.
    viral = [f"{v:.0f}" for v in rng.uniform(10, 30, 1932)] + [f"{v:.4g}" for v in 10 ** rng.uniform(9, 10, 68)]
    assert _ingest(tmp_path / "viral", viral)[0].sources[0].quarantined == 0
    # No spread in its quartiles (mostly zeros): judged on its 1st to 99th percentile's range.
    mostly_zero = ["0"] * 540 + [f"{v:.4f}" for v in rng.lognormal(1, 1, 59)] + ["1e12"]
    report, (curated, _) = _ingest(tmp_path / "zeros", mostly_zero)
    assert report.sources[0].quarantined == 1 and curated["f1"].max() < 1e6
    sentinel = [f"{v:.4f}" for v in rng.normal(2, 1, 300)]
    sentinel[3] = "1e12"
    report, _ = _ingest(tmp_path / "bounded", sentinel, "[columns.f1]\ntype = \"number\"\nmin = -1e13\nmax = 1e13\n")
    assert report.sources[0].quarantined == 0  # the user's own bounds say such values are real


def test_the_endpoint_takes_the_values_its_training_rows_held_however_few():
    # A viral load at its detection limit but for 5 patients of 400 (3e9 to 9e9): 3 of them fell in the training
    # split, whose spread is then almost none, and the endpoint refused the very values it was trained on.
    from diagnosa.data.schema import Field, Schema
    from diagnosa.data.validate import implausible_bounds, number_spread
    from inference.schema import RequestSchema

    rng = np.random.default_rng(12)
    training = np.concatenate([np.full(260, 20.0), rng.uniform(20, 345, 17).round(), [3.2e9, 5.1e9, 8.0e9]])
    spread = number_spread(training)
    assert not implausible_bounds(spread)[1] >= 3.2e9  # the spread alone would refuse them
    schema = Schema("x", (Field("case", "string", role="id"), Field("vl", "number"),
                          Field("outcome", "category", role="target", values=("a", "b"))), ("a", "b"))
    requests = RequestSchema(schema, spreads={"vl": list(spread)})
    for value in (3.2e9, 8.0e9, 8.6e9, 20.0, 0.0):  # held in training, a little beyond its greatest, ordinary
        assert requests.validate(0, {"vl": value})[1] == [], value
    [problem] = requests.validate(0, {"vl": 1e12})[1]
    assert problem.problem.startswith("implausible value 1e+12") and "their range, 20 to 8e+09" in problem.problem
