"""The endpoint's request limits, shared by the handler that enforces them and the clients that stay within them."""
from __future__ import annotations

MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker's real-time invocation payload limit
MAX_RECORDS = 10_000  # patients per request: work stays proportional to what a caller can mean
MAX_LISTED_PROBLEMS = 100  # problems listed in a refusal; the message says how many more there were
