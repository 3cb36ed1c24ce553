"""A local endpoint with data capture and no model, for the feedback route's tests: the fixture ``endpoint``
(import ``endpoint_fixture``) and events it captured."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from diagnosa.lake import DataLake
from inference.capture import DataCapture, new_event_id
from inference.server import EndpointServer


@pytest.fixture(name="endpoint")
def endpoint_fixture(tmp_path):
    """(the running server, its lake)."""
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    ep = EndpointServer("unused", capture=DataCapture(lake, "diagnosa"), loader=lambda _: None).start()
    yield ep, lake
    ep.stop()


def captured_event(ep: EndpointServer) -> str:
    """An event id the endpoint captured (as _invocation does: a time-ordered id, spooled)."""
    when = datetime.now(timezone.utc)
    event_id = new_event_id(when)
    assert ep.capture.record(event_id, None, b'{"age": 40}', "application/json", b'{"predictions": []}',
                             "application/json", when)
    return event_id
