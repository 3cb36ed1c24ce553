"""End to end in a real browser: local endpoint + `streamlit run` + headless Debian Chromium (Playwright).

The browser tests skip only when Debian's chromium is not installed (`make browser` installs it). The
screenshot in docs/app-diagnosis.png comes from the same driver, `python -m app.e2e --model DIR-or-model.tar.gz
--out docs/app-diagnosis.png`: the block of docs/app.md's *Tests* section that this module covers.
"""
from __future__ import annotations

import tarfile
from contextlib import contextmanager

import pytest

from app.e2e import click_get_diagnosis
from diagnosa.browser import MISSING_REASON

needs_chromium = pytest.mark.needs("chromium")


@contextmanager
def _form_page(model_dir, tmp_path, capture=None, path=""):
    """A Chromium page of the app (``streamlit run``, as ``diagnosa app`` starts it, under ``path``) on a local
    endpoint serving ``model_dir``, its data-use policy accepted: the patient form."""
    from app.config import AppConfig
    from app.e2e import running_app
    from diagnosa.browser import launch
    from inference.server import EndpointServer

    with EndpointServer(str(model_dir), capture=capture) as endpoint:
        endpoint.wait_until_ready()
        config = AppConfig(endpoint_url=endpoint.url, model=str(model_dir), timeout=10, attempts=1)
        with running_app(config, log=tmp_path / "streamlit.log", path=path) as url, launch() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            page.goto(url + "/", wait_until="load")
            page.get_by_label("I have read the data-use policy and accept it").check(force=True)
            yield page


@pytest.fixture()
def model_tarball(trained_model_dir, tmp_path):
    """The trained model as SageMaker ships it: a model.tar.gz with the model files at its root."""
    path = tmp_path / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(trained_model_dir.iterdir()):
            tar.add(item, arcname=item.name)
    return path


def test_the_e2e_command_names_a_missing_or_unreadable_model(tmp_path, capsys):
    from app.e2e import main

    assert main(["--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == f"app.e2e: error: model not found: {tmp_path / 'nowhere'} (a model folder or a " \
                                      "model.tar.gz)\n"
    junk = tmp_path / "model.tar.gz"
    junk.write_bytes(b"not a tarball")
    assert main(["--model", str(junk), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"app.e2e: error: {junk} is not a readable model.tar.gz") and err.count("\n") == 1


def test_the_e2e_command_without_chromium_says_how_to_get_it(model_tarball, tmp_path, monkeypatch, capsys):
    from app.e2e import main

    monkeypatch.setenv("DIAGNOSA_CHROMIUM", str(tmp_path / "no-chromium"))
    assert main(["--model", str(model_tarball), "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == f"app.e2e: error: {MISSING_REASON}; `make browser` installs it as root\n"


@needs_chromium
def test_the_e2e_command_takes_a_model_tar_gz(model_tarball, tmp_path, capsys):
    from app.e2e import main
    from diagnosa.labels import CATEGORIES

    out = tmp_path / "shot.png"
    assert main(["--model", str(model_tarball), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("diagnosis shown: ") and any(c in printed for c in CATEGORIES)
    assert out.read_bytes().startswith(b"\x89PNG")


@needs_chromium
def test_doctor_fills_the_form_in_chromium_and_sees_the_diagnosis(trained_model_dir, tmp_path):
    from app.e2e import PATIENT, run
    from diagnosa.labels import CATEGORIES

    result = run(trained_model_dir, tmp_path / "app-diagnosis.png", log=tmp_path / "streamlit.log")
    assert any(result.headline.startswith(c) for c in CATEGORIES), result.headline
    png = result.screenshot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    for value in (PATIENT["temperature_c"], PATIENT["wbc_10e9_l"], "HP:0001945", "Dyspnea", "Fever"):
        assert value not in result.storage  # nothing of the patient in localStorage or sessionStorage
    assert result.seconds < 90


@needs_chromium
def test_the_app_under_a_base_path_serves_the_whole_flow_there_and_nothing_at_the_root(trained_model_dir, tmp_path):
    # https://tools.hospital.example/diagnosa/ behind a proxy that keeps the path: every request of the page (its
    # assets, its websocket) under it, none at the host's root, which belongs to the other tools.
    import urllib.error
    import urllib.parse
    import urllib.request

    from app.e2e import ask_for_diagnosis
    from diagnosa.labels import CATEGORIES

    with _form_page(trained_model_dir, tmp_path, path="tools/diagnosa") as page:
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.url))
        page.reload(wait_until="load")
        page.get_by_label("I have read the data-use policy and accept it").check(force=True)
        headline = ask_for_diagnosis(page)
        assert any(headline.startswith(c) for c in CATEGORIES), headline
        assert urllib.parse.urlsplit(page.url).path == "/tools/diagnosa/"
        assert asked and [u for u in asked if not urllib.parse.urlsplit(u).path.startswith("/tools/diagnosa/")] == []
        root = page.url.split("/tools/")[0]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{root}/_stcore/health", timeout=10)
        assert refused.value.code == 404


@needs_chromium
def test_a_doctor_typing_decimal_commas_in_chromium_sends_decimals(trained_model_dir, tmp_path):
    # Chromium's number field drops a comma: a white count typed "15,2" went to the endpoint as 152, which it accepts
    # (10^9/L, up to 200), and the display rounded what was typed to two decimals.
    import json

    from diagnosa.lake import DataLake
    from inference.capture import DataCapture

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    capture = DataCapture(lake, "diagnosa")
    with _form_page(trained_model_dir, tmp_path, capture) as page:
        typed = {"age": "67", "wbc_10e9_l": "15,2", "temperature_c": "38,9", "creatinine_mg_dl": "0,125"}
        for name, text in typed.items():
            field = page.locator(f".st-key-in-{name} input")
            field.press_sequentially(text)  # keystrokes, as a doctor types
            field.press("Tab")
        click_get_diagnosis(page)
        page.locator(".st-key-result").get_by_text("supports and does not replace clinical judgement").wait_for()
        assert capture.flush()
        sent = [json.loads(json.loads(line)["captureData"]["endpointInput"]["data"])["instances"][0]
                for key in lake.list("capture/") for line in lake.get_bytes(key).decode().splitlines()]
        assert [(r["age"], r["wbc_10e9_l"], r["temperature_c"], r["creatinine_mg_dl"]) for r in sent] == [
            (67, 15.2, 38.9, 0.125)]
        for name, text in typed.items():  # and the form still shows what was typed, not a rounded number
            assert page.locator(f".st-key-in-{name} input").input_value() == text

        # The endpoint's refusal quotes what was typed: shown as text, not rendered as a markdown image.
        codes = page.locator(".st-key-in-prior_diagnoses input")
        codes.fill("![x](http://evil.example/t.png)")
        codes.press("Enter")
        codes.press("Escape")  # close the list of codes
        click_get_diagnosis(page)
        page.locator(".st-key-field-prior_diagnoses").get_by_text(
            "malformed code '![x](http://evil.example/t.png)'").wait_for()
        assert page.locator("img[src*='evil.example']").count() == 0
        assert page.locator("a[href*='evil.example']").count() == 0  # nor its URL a link (GFM's autolink)


# What an own dataset's columns are called is the hospital's text: markdown to Streamlit in a widget's label.
HOSTILE_NAME = "[site](http://evil.example/x) **dose** $x^2$ ~~gone~~ www.evil.example"
HOSTILE_UNIT = "10*9/L *per* $"


@needs_chromium
def test_an_own_datasets_column_names_and_units_are_shown_as_written_in_chromium(tmp_path, train_model):
    from playwright.sync_api import expect

    from app.form import load_form_spec
    from diagnosa.data.ingest import ingest_csv, load_curated
    from diagnosa.lake import DataLake

    rows = [f'id,age,"{HOSTILE_NAME}",ward,label'] + [
        f"{i},{20 + i % 50},{(i * 7) % 13},{'east' if i % 2 else 'west'},{'A' if i % 3 else 'B'}"
        for i in range(90)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "t.toml").write_text('name = "t"\nid_column = "id"\ntarget = "label"\nlabels = ["A", "B"]\n'
                                     f'[columns."{HOSTILE_NAME}"]\ntype = "number"\nunit = "{HOSTILE_UNIT}"\n',
                                     encoding="utf-8")
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    ingest_csv(lake, tmp_path / "t.csv", tmp_path / "t.toml")
    model = train_model(tmp_path / "train", load_curated(lake, "t"), {"family": "logistic_regression"})
    title = load_form_spec(model).by_name(HOSTILE_NAME).title
    assert HOSTILE_UNIT in title
    with _form_page(model, tmp_path) as page:
        # .first: while a rerun draws the form, the old one is still there for a moment
        label = page.locator(".st-key-patient label").filter(has_text="dose").first
        expect(label).to_have_text(title)  # as the column is named, its unit and all
        assert label.locator("a, strong, em, del, .katex, img").count() == 0
        assert page.locator("a[href*='evil.example']").count() == 0
