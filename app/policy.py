"""The data-use policy the doctor accepts before any patient data leaves the browser.

It says what the endpoint keeps (data capture, configured on the endpoint) and what the app keeps
(nothing beyond the browser session). ``POLICY_VERSION`` changes whenever the text does.
"""
from __future__ import annotations

POLICY_VERSION = "2026-11-27"

POLICY_MARKDOWN = """\
**What is sent.** When you ask for a diagnosis, the values in this form (age, sex, vital signs,
lab results, symptoms, prior diagnoses) are sent to the Diagnosa endpoint. Do not type names,
record numbers or other identifying details: the form has no place for them.

**What the endpoint keeps.** The endpoint may keep a copy of each request and its answer for
monitoring the model (*data capture*): for the share of requests its operator configured, in the
data lake's `capture/` zone, under a case reference (the event id shown with the result). A
confirmed diagnosis you record later is kept in the `feedback/` zone under the same reference.

**What this app keeps.** Nothing is written to disk, logs or browser storage. The values live in
the server's memory for your browser session only, and are gone when you close the tab or press
*New patient*.

**What the result is.** A statistical estimate from a model trained on synthetic and
knowledge-base data. It supports and does not replace clinical judgement.
"""

ACCEPT_LABEL = "I have read the data-use policy and accept it"
