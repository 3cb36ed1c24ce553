"""Feedback stored over a damaged event object (not UTF-8, not JSON, nested too deeply, not an object, revisions not a
list): the object is moved aside whole before it is replaced, never lost, and the reader counts it."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from diagnosa.lake import DataLake
from inference.feedback import Replaced, parse_feedback, read_feedback, store_feedback

EP = "diagnosa"
START = datetime(2026, 3, 10, tzinfo=timezone.utc)
END = datetime(2026, 3, 11, tzinfo=timezone.utc)
DEEP = b"[" * 100_000 + b"]" * 100_000

KEY = f"feedback/{EP}/events/e2.json"
EARLIER = {"event_id": "e2", "diagnosis": "ENFERMEDAD AGUDA", "received_at": "2026-11-26T10:00:00.000000+00:00"}


def _set_aside_reason() -> str:
    from inference.feedback import SET_ASIDE_REASON  # imported here: each test fails by itself on the old code

    return SET_ASIDE_REASON


def _aside(lake: DataLake, key: str = KEY) -> list[str]:
    return [k for k in lake.list(f"feedback/{EP}/") if k.startswith(key + ".damaged-")]


def test_storing_over_an_object_nested_too_deeply_sets_it_aside_whole(tmp_path):
    # It was replaced and lost: its current record (readable to a reader that skips the too-deep member) and its
    # revisions went with it. Its bytes are now set aside, counted by the reader, and the reply says it was unreadable.
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    damaged = (b'{"event_id": "e2", "diagnosis": "NO ENFERMO", "received_at": "2026-11-27T10:00:00.000000+00:00", '
               b'"x": ' + DEEP + b', "revisions": [' + json.dumps(EARLIER).encode() + b", " + DEEP + b"]}")
    lake.put_bytes(KEY, damaged)
    stored = store_feedback(lake, EP, parse_feedback({"event_id": "e2", "diagnosis": "ENFERMEDAD LEVE"}))
    assert stored.replaced == Replaced(unreadable=True)
    obj = lake.get_json(KEY)
    assert obj["diagnosis"] == "ENFERMEDAD LEVE" and obj["revisions"] == []
    aside = _aside(lake)
    assert len(aside) == 1 and lake.get_bytes(aside[0]) == damaged  # its bytes, unchanged
    read = read_feedback(lake, EP)
    assert read.latest[("e2", None)].diagnosis == "ENFERMEDAD LEVE" and read.records == 1
    reason = _set_aside_reason()
    assert read.problems == {reason: 1} and read.examples[reason] == aside


@pytest.mark.parametrize("damaged, kept", [
    (b"{oops", []),
    (b"[1, 2]", []),
    (b"\xff\xfe", []),
    (b'{"event_id": "e2", "diagnosis": "NO ENFERMO", ' + DEEP[:10] + b"}", []),  # not JSON
    (b'{"event_id": "e2", "diagnosis": "NO ENFERMO", "revisions": {"a": 1}}', ["NO ENFERMO"]),
    (b'{"event_id": "e2", "diagnosis": "NO ENFERMO", "x": ' + DEEP + b"}", []),  # nested too deeply
    (b'{"event_id": "e2", "diagnosis": "NO ENFERMO", "x": ' + DEEP + b"} trailing", []),
    (DEEP, []),
])
def test_a_damaged_object_is_moved_aside_never_lost(tmp_path, damaged, kept):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    lake.put_bytes(KEY, damaged)
    stored = store_feedback(lake, EP, parse_feedback({"event_id": "e2", "diagnosis": "ENFERMEDAD LEVE"}))
    assert stored.replaced is not None and stored.replaced.unreadable == (not kept)
    assert [r.get("diagnosis") for r in lake.get_json(KEY)["revisions"]] == kept
    aside = _aside(lake)
    assert len(aside) == 1 and lake.get_bytes(aside[0]) == damaged
    assert re.fullmatch(re.escape(KEY) + r"\.damaged-[0-9]{8}T[0-9]{12}Z-[0-9a-f]{8}", aside[0])


def test_a_readable_object_is_not_set_aside(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    lake.put_json(KEY, {"event_id": "e2", "diagnosis": "NO ENFERMO", "note": None, "revisions": [{"x": 1}]})
    store_feedback(lake, EP, parse_feedback({"event_id": "e2", "diagnosis": "ENFERMEDAD LEVE"}))
    assert _aside(lake) == [] and read_feedback(lake, EP).problems == {}


def test_an_object_that_cannot_be_set_aside_is_not_replaced(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    lake.put_bytes(KEY, b"{oops")
    put_bytes = lake.put_bytes

    def refusing(key: str, data: bytes) -> None:
        if ".damaged-" in key:
            raise OSError("storage refused")
        put_bytes(key, data)

    lake.put_bytes = refusing  # type: ignore[method-assign]
    with pytest.raises(OSError):
        store_feedback(lake, EP, parse_feedback({"event_id": "e2", "diagnosis": "ENFERMEDAD LEVE"}))
    assert lake.get_bytes(KEY) == b"{oops"


def test_an_object_set_aside_is_counted_with_its_events_feedback_in_a_window(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    for event in ("e2", "e3"):
        lake.put_bytes(f"feedback/{EP}/events/{event}.json", b"{oops")
        store_feedback(lake, EP, parse_feedback({"event_id": event, "diagnosis": "ENFERMEDAD LEVE"}))
    lake.put_bytes(f"feedback/{EP}/events/e4/1.json", b"[]")
    store_feedback(lake, EP, parse_feedback({"event_id": "e4", "event_row": 1, "diagnosis": "NO ENFERMO"}))
    named = read_feedback(lake, EP, (START, END), ids=["e2", "e4"])
    reason = _set_aside_reason()
    assert named.problems == {reason: 2} and named.not_named == 2  # e3's object and the one set aside
    assert all(".damaged-" in key for key in named.examples[reason])
    assert read_feedback(lake, EP).problems == {reason: 3}  # retraining reads all
