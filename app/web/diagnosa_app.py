"""The doctors' app: data-use policy, patient form, diagnosis, confirmed diagnosis.

Run it with ``diagnosa app`` (see docs/app.md). This script only lays out widgets; what they do
lives in the ``app`` package, tested on its own. Patient values stay in this browser session's
server-side state (``st.session_state``): nothing is logged, written to disk, put in the URL or
in browser storage.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import streamlit as st
from botocore.exceptions import BotoCoreError

from app.config import AppConfig, ConfigError
from app.form import (
    BOOLEAN_CHOICES,
    FieldErrors,
    FormError,
    FormField,
    FormSpec,
    build_record,
    load_form_spec,
    read_numbers,
    to_correct,
)
from app.policy import ACCEPT_LABEL, POLICY_MARKDOWN, POLICY_VERSION
from app.results import (
    DIFFERENTIAL_LABEL,
    WARNING,
    Failure,
    FeedbackOutcome,
    Outcome,
    client_failure,
    decision_note,
    diagnose,
    differential_rows,
    feedback_supported,
    header_caption,
    headline,
    label_problem,
    make_client,
    probability_chart,
    probability_rows,
    record_feedback,
    top_k_rows,
)
from app.terms import TermIndex, build_index
from diagnosa.text import label_literal, markdown_literal
from inference.client import ClientFailure
from inference.feedback import MAX_NOTE

# Request bodies must never reach a log, whatever level the host process configured.
for _name in ("botocore", "boto3", "urllib3", "s3transfer"):
    logging.getLogger(_name).setLevel(logging.WARNING)

FIELD = "in-"  # widget keys of the patient form: "in-<field name>"
SYMPTOMS = "symptoms"  # the chosen HPO ids (of the first field of terms; another's: "terms-<field name>")


@dataclass(frozen=True)
class TermsKeys:
    """The session keys of one field of terms' picker: the chosen ids, the search box, the buttons' prefix. The first
    field keeps the keys the app always had; each other field has its own (a second field of terms, a family
    history, had no picker at all, and its terms were never sent: the endpoint answered as if there were none)."""

    chosen: str
    query: str
    buttons: str


def terms_keys(spec: FormSpec, f: FormField) -> TermsKeys:
    first = spec.terms_field is not None and f.name == spec.terms_field.name
    return TermsKeys(SYMPTOMS, "symptom_query", "") if first else TermsKeys(
        f"terms-{f.name}", f"terms_query-{f.name}", f"{f.name}-")


@st.cache_resource(show_spinner=False)
def _spec(model: str | None) -> FormSpec:
    return load_form_spec(model)


@st.cache_resource(show_spinner="Loading the symptom index…")
def _index(preferred: tuple[str, ...]) -> TermIndex:
    return build_index(preferred)


@st.cache_resource(show_spinner=False)
def _client(endpoint_name: str, endpoint_url: str | None, region: str | None, lake: str | None, timeout: float,
            attempts: int) -> Any:
    return make_client(AppConfig(endpoint_name, endpoint_url, region, lake=lake, timeout=timeout, attempts=attempts))


def client_for(config: AppConfig) -> Any:
    """The endpoint's client, or the :class:`Failure` saying why there is none: botocore resolves the AWS credentials
    as it makes its client, and a provider that fails (a credential_process exiting 1, an expired SSO token) broke the
    whole page, which showed the exception's name and no form. Not cached when it fails: renewed credentials are used
    at the next click."""
    try:
        return _client(config.endpoint_name, config.endpoint_url, config.region, config.lake, config.timeout,
                       config.attempts)
    except (BotoCoreError, ClientFailure) as err:
        return client_failure(err, config)


# ------------------------------------------------------------------------------------------------ callbacks

def add_symptom(term: str, key: str = SYMPTOMS) -> None:
    chosen = list(st.session_state.get(key, []))
    if term not in chosen:
        st.session_state[key] = chosen + [term]


def remove_symptom(term: str, key: str = SYMPTOMS) -> None:
    st.session_state[key] = [t for t in st.session_state.get(key, []) if t != term]


# What the doctor chose for one case, each with its widget's empty value.
FEEDBACK_ANSWERS: dict[str, Any] = {"fb-diagnosis": None, "fb-disease": "", "fb-note": ""}


def clear_feedback(*, reference: bool) -> None:
    """Forget the feedback answers (and with ``reference``, the case reference and its case): they belong to one
    case. Carried over, the previous patient's confirmed diagnosis, disease id and note were recorded for the next.
    Each widget is given its empty value rather than deleted (:func:`reset_widget`)."""
    for key, empty in FEEDBACK_ANSWERS.items():
        reset_widget(key, empty)
    if reference:
        reset_widget("fb-event", "")
        st.session_state.pop("fb-case", None)


def reset_widget(key: str, empty: Any) -> None:
    """Empty a widget, on the screen too. Deleting its key from st.session_state emptied it on the server only: the
    browser keeps a widget's value under the same key and sends it back with the next rerun, so after *New patient*
    the fields still showed the previous patient's age and sex, and *Get diagnosis* sent them again. A value assigned
    through st.session_state (in a callback, before the widget is drawn) is sent to the browser, which shows it."""
    st.session_state[key] = empty


def submit(config: AppConfig, spec: FormSpec) -> None:
    st.session_state.pop("feedback_outcome", None)
    # Whatever comes of it (nothing sent, a failure, a new case), the earlier case's reference and answers are not
    # this patient's: carried over, patient A's confirmed diagnosis was filed under patient B.
    clear_feedback(reference=True)
    if not st.session_state.get("policy_accepted"):
        st.session_state["outcome"] = None
        st.session_state["blocked"] = True
        return
    st.session_state["blocked"] = False
    values = form_values(spec)
    # What comes of the request goes into this dict, kept in st.session_state before the call and filled after it
    # without touching st.session_state (settle() moves it into place). A value edited (or anything clicked) while
    # the request was out makes Streamlit start a new run of the page at once and stop this callback at its next
    # st.session_state access: the answer received was lost, and the result of the values before stayed on the
    # screen. The new run shows that a diagnosis is being asked for (awaiting) and shows it when it comes.
    asked: dict[str, Any] = {"values": values}  # what the result is of (a later edit is told: stale_result)
    st.session_state[ASKED] = asked
    try:
        numbers, problems = read_numbers(spec, values)
        if problems:  # a value typed that is not a number: nothing is sent, the problem is shown under its field
            errors = FieldErrors(problems)
            asked["outcome"] = Outcome(failure=Failure(
                "rejected", f"Nothing was sent: {to_correct(spec, errors)} and ask again.", errors))
        elif isinstance(client := client_for(config), Failure):  # no client (the AWS credentials): nothing was sent
            asked["outcome"] = Outcome(failure=client)
        else:
            outcome = diagnose(client, build_record(spec, numbers), config, spec)
            asked["outcome"], asked["reference"] = outcome, case_reference(outcome, config) if outcome.ok else None
    finally:
        asked["done"] = True
    settle()


ASKED = "asked"  # the request last asked for and what came of it, until settle() has put it in place


def settle() -> None:
    """Put what came of the last request in place: the outcome, the values it is of and, for a new case, the feedback
    form's reference (the form starts empty, with it). Called again at the top of each run until done, so an
    interrupted one is finished by the next run (each step may be done twice, none is lost)."""
    asked = st.session_state.get(ASKED)
    if not asked or not asked.get("done"):
        return
    if "outcome" not in asked:  # the call raised (said by Streamlit): nothing to put in place
        st.session_state.pop(ASKED, None)
        return
    outcome: Outcome = asked["outcome"]
    st.session_state["outcome"] = outcome
    st.session_state["outcome_values"] = asked["values"]
    reference = asked.get("reference")
    if reference:  # a new case: the feedback form starts empty, with its reference
        st.session_state["fb-event"] = reference
        st.session_state["fb-case"] = {"event_id": reference, "at": outcome.received_at,
                                       "category": (outcome.result or {}).get("category")}
    st.session_state.pop(ASKED, None)


def form_values(spec: FormSpec) -> dict[str, Any]:
    """The patient's values as the widgets hold them (the measurements as typed), the chosen symptoms included."""
    values = {f.name: st.session_state.get(FIELD + f.name) for f in spec.fields}
    for f in spec.terms_fields:
        values[f.name] = list(st.session_state.get(terms_keys(spec, f).chosen, []))
    return values


def stale_result(spec: FormSpec) -> bool:
    """Whether the values have changed since the diagnosis shown was asked for: any field, or the symptoms. The
    fields are not in an st.form, whose values reach the app only when it is submitted: a value edited after a
    diagnosis (or while one was being asked for) was on the screen beside the earlier values' diagnosis, unmarked."""
    return bool(changed_fields(spec))


def changed_fields(spec: FormSpec) -> list[str]:
    """The labels of the fields whose value differs from the one the diagnosis shown was asked for ([] without one)."""
    asked = st.session_state.get("outcome_values")
    if asked is None:
        return []
    now = form_values(spec)
    return [f.label for f in spec.fields if _blank(asked.get(f.name)) != _blank(now.get(f.name))]


def _blank(value: Any) -> Any:
    """A value as compared for staleness: empty in any form ("", None, [], spaces) is the same empty."""
    if isinstance(value, str):
        value = value.strip()
    return None if value in ("", None, []) else value


def case_reference(outcome: Outcome, config: AppConfig) -> str | None:
    """What a confirmed diagnosis is recorded against: the endpoint's event id (the local endpoint answers it), else
    over SageMaker, which returns none, the inference id the app gave the prediction: the capture keeps it, and the
    monitor and retraining join feedback under it to the request's event."""
    return outcome.event_id or (outcome.inference_id if not config.is_local else None)


def send_feedback(config: AppConfig, spec: FormSpec) -> None:
    if not st.session_state.get("policy_accepted"):
        st.session_state["feedback_outcome"] = FeedbackOutcome(message="Accept the data-use policy first.")
        return
    client = client_for(config)
    if isinstance(client, Failure):  # no client (the AWS credentials): nothing was sent
        st.session_state["feedback_outcome"] = FeedbackOutcome(message=client.message)
        return
    outcome = record_feedback(client, st.session_state.get("fb-event") or "",
                              st.session_state.get("fb-diagnosis"), st.session_state.get("fb-note"), config,
                              disease_id=st.session_state.get("fb-disease") if spec.orphan_slice else None,
                              labels=spec.labels)
    st.session_state["feedback_outcome"] = outcome
    if outcome.ok:  # recorded: the answers are not offered again for another case
        clear_feedback(reference=False)


def new_patient(spec: FormSpec) -> None:
    # Each widget given its empty value, not deleted: the browser showed and sent the previous patient's (reset_widget).
    for f in spec.fields:
        if f.kind != "terms":
            reset_widget(FIELD + f.name, empty_value(f, spec))
    for f in spec.terms_fields:
        reset_widget(terms_keys(spec, f).query, "")
        st.session_state.pop(terms_keys(spec, f).chosen, None)
    clear_feedback(reference=True)
    for key in (ASKED, "outcome", "outcome_values", "feedback_outcome", "blocked"):
        st.session_state.pop(key, None)


# ------------------------------------------------------------------------------------------------ widgets

def term_key(term: str) -> str:
    """A widget key for an HPO id that is also a valid CSS class ('HP:0001945' → 'HP_0001945')."""
    return term.replace(":", "_")


def empty_value(f: FormField, spec: FormSpec) -> Any:
    """What :func:`field_widget`'s widget for ``f`` holds when nothing was entered."""
    if f.kind == "codes":
        return []
    if f.kind in ("choice", "boolean") or (f.kind == "text" and spec.levels.get(f.name)):
        return None
    return ""


# A measurement reaches the app a moment after the doctor stops typing (not only when leaving the field), so that a
# result beside it is marked as of the earlier values at once (stale_result).
LIVE = "400ms"


def field_widget(f: FormField, spec: FormSpec) -> None:
    key = FIELD + f.name
    # A widget's label and help are markdown to Streamlit: an own dataset's column named '[site](http://…)' was a link
    # in the doctor's form, '$x^2$' a formula, a unit '10*9/L' half in italics. They are the column's words, as text.
    # The label with label_literal: Streamlit copies its source into the input's aria-label, and markdown_literal's
    # backslashes were read out ('Age \\(years\\)'); the help shows in a tooltip, as markdown.
    title, help_ = label_literal(f.title), f.help and markdown_literal(f.help)
    if f.kind in ("integer", "number"):
        # Text, read by app.form.parse_number: the browser's number field drops a decimal comma (15,2 became 152,
        # an age of 6,5 became 65), cut a decimal of a whole number (67.5 became 67), let go of a value too big for
        # it, and its display rounded what was typed (0.004 showed as 0.00 and was sent as 0.004). No max_chars:
        # Streamlit drops a paste longer than it whole, silently; parse_number refuses a value too long, by field.
        st.text_input(title, key=key, help=help_, placeholder="not recorded", live=LIVE)
    elif f.kind == "choice":
        st.selectbox(title, f.choices, index=None, format_func=f.choice_label, key=key, placeholder="not recorded")
    elif f.kind == "boolean":
        st.selectbox(title, tuple(BOOLEAN_CHOICES), index=None, key=key, placeholder="not recorded")
    elif f.kind == "codes":
        st.multiselect(title, spec.known_codes, key=key, accept_new_options=True, placeholder="type or choose codes",
                       help="Codes the model knows are listed; others can be typed.")
    elif spec.levels.get(f.name):  # a category: the values the model learned, or another typed in
        st.selectbox(title, spec.levels[f.name], index=None, key=key, accept_new_options=True,
                     placeholder="not recorded (choose, or type another value)",
                     help="The values the model learned are listed; another can be typed, and is then counted as "
                          "none of them.")
    else:
        st.text_input(title, key=key, live=LIVE)


def show_errors(problems: list[str]) -> None:
    for problem in problems:  # the endpoint's words may quote what was typed: shown as text, never as markdown
        st.error(markdown_literal(problem), icon=":material/error:")


def show_warnings(warnings: list[str]) -> None:
    for warning in warnings:  # an input the model ignored (it quotes what was typed: text, never markdown)
        st.warning(markdown_literal(warning), icon=":material/warning:")


def symptom_picker(f: FormField, index: TermIndex, problems: list[str], keys: TermsKeys) -> None:
    first = keys.chosen == SYMPTOMS
    with st.container(key="field-" + f.name):
        st.markdown(f"**{markdown_literal(f.label)}**")
        query = st.text_input("Search symptoms by name" if first else label_literal(f"Search {f.label} by name"), key=keys.query,
                              type="search", live=True, placeholder="e.g. fever, shortness of breath, abdominal pain")
        chosen = st.session_state.get(keys.chosen, [])
        for term in index.search(query or ""):
            if term.id not in chosen:
                st.button(term.label, key=f"add-{keys.buttons}{term_key(term.id)}", icon=":material/add:",
                          on_click=add_symptom, args=(term.id, keys.chosen), type="tertiary")
        if query and not index.search(query):
            st.caption("No symptom matches that search." if first else "No term matches that search.")
        if chosen:
            st.caption("Chosen (click to remove):")
            with st.container(horizontal=True):
                for term in chosen:
                    st.button(index.name(term), key=f"remove-{keys.buttons}{term_key(term)}", icon=":material/close:",
                              on_click=remove_symptom, args=(term, keys.chosen))
        else:
            st.caption("No symptoms chosen." if first else "No terms chosen.")
        show_errors(problems)


def show_result(outcome: Outcome, spec: FormSpec, config: AppConfig) -> None:
    with st.container(key="result", border=True):
        try:
            _result(outcome, spec, config)
        except Exception as err:  # noqa: BLE001  (the feedback form below must render whatever the answer held)
            st.error(f"The diagnosis cannot be shown ({type(err).__name__}). Tell the administrator; press "
                     "*New patient* to start again.")


STALE = "The values have changed since this diagnosis: ask again for a diagnosis of these values."


def _result(outcome: Outcome, spec: FormSpec, config: AppConfig) -> None:
    result = outcome.result or {}
    changed = changed_fields(spec)
    # Marked in its heading, not only in a warning: the form beside it shows other values, and a doctor glancing at
    # the result must not take it for theirs. Kept on screen (not hidden) so that a slip being corrected does not
    # make the diagnosis vanish; asking again replaces it.
    st.subheader("Diagnosis of the earlier values" if changed else "Diagnosis", anchor=False)
    if changed:  # an alert (role "alert": announced by screen readers), not a caption (3.9:1, and silent)
        st.warning(f"{STALE} Changed: {markdown_literal(', '.join(changed))}.", icon=":material/history:")
    st.markdown(f"### {markdown_literal(headline(result))}")  # a label of the user's own is text
    note = decision_note(result, outcome.decision_weights)
    if note:  # why the category shown is not the most probable one: read with it (role "status")
        st.info(markdown_literal(note), icon=":material/info:")
    other = label_problem(result, spec)
    if other:
        st.error(markdown_literal(other), icon=":material/help:")
    show_warnings(outcome.warnings.get("", []))  # ignored inputs of fields the form does not show
    st.warning(WARNING, icon=":material/stethoscope:")
    if "differential" in result:
        with st.container(key="differential"):
            st.markdown(f"**{DIFFERENTIAL_LABEL}**")
            rows = differential_rows(result)
            if rows:
                # Plain text, no links: escape markdown so a disease name cannot format or link anything.
                st.markdown("\n".join(f"{i}. {markdown_literal(row)}" for i, row in enumerate(rows, start=1)))
            else:
                st.caption("No rare disease in the knowledge base matches these symptoms.")
            st.caption(markdown_literal(result.get("differential_note", "")))
    st.markdown("**Probability of each category**")
    st.altair_chart(probability_chart(probability_rows(result)), width="stretch")
    st.markdown("**Most likely categories**")
    st.table(top_k_rows(result), hide_index=True)
    # The endpoint's words, as text (markdown_literal: a link-like run goes in a code span fenced longer than any
    # backticks in it; a plain one-backtick span was closed by a backtick in them and rendered a link).
    case = case_reference(outcome, config)
    reference = f" · case reference {markdown_literal(case)}" if case else ""
    st.caption(f"Model version {markdown_literal(str(result.get('model_version', 'unknown')))}{reference}")


@st.fragment(run_every="1s")
def awaiting(asked: dict[str, Any]) -> None:
    """While a request asked for in an earlier run is out: says so, and reruns the page once its answer is in."""
    if asked.get("done"):
        st.rerun()  # settle() puts it in place
    st.info("A diagnosis is being asked for: it appears here when the endpoint answers.",
            icon=":material/hourglass_top:")


SAGEMAKER_FEEDBACK = ("Recording a confirmed diagnosis over a SageMaker endpoint needs the data lake it goes to: the "
                      "administrator starts the app with --feedback-lake (DIAGNOSA_APP_LAKE).")


def feedback_section(config: AppConfig, spec: FormSpec, client: Any) -> None:
    current: Outcome | None = st.session_state.get("outcome")
    with st.expander("Record the confirmed diagnosis", expanded=bool(current and current.ok)):
        if not config.is_local and not config.lake:
            st.info(SAGEMAKER_FEEDBACK, icon=":material/info:")
            return
        if isinstance(client, Failure):  # said above the form: the app has no client
            st.info(markdown_literal(client.message), icon=":material/info:")
            return
        if not feedback_supported(client):
            st.info("Recording a confirmed diagnosis needs the endpoint's feedback route, which this version of "
                    "the client does not offer.")
            return
        outcome: FeedbackOutcome | None = st.session_state.get("feedback_outcome")
        problems = dict((outcome.fields or {}) if outcome else {})
        case = st.session_state.get("fb-case") or {}
        typed = (st.session_state.get("fb-event") or "").strip()
        # The values of the case beside it are no longer those on screen: its confirmed diagnosis is not taken (the
        # doctor would record it for values other than those they see). Disabled, not removed: the answers stay, and
        # come back if the change is undone; asking again gives the values a case of their own.
        stale = bool(typed) and typed == case.get("event_id") and bool(current and current.ok) and stale_result(spec)
        with st.form("feedback", border=False):
            st.text_input("Case reference", key="fb-event", disabled=stale,
                          help="Shown with each diagnosis; another case's can be typed.")
            if stale:
                st.warning(markdown_literal(
                    f"Not for these values: case {typed} is the diagnosis given at {case.get('at')} "
                    f"({case.get('category')}) of the earlier values. Ask again for a diagnosis of the values in the "
                    "form, then record its confirmed diagnosis."), icon=":material/history:")
            elif typed and typed == case.get("event_id"):  # which case the reference is: the one beside it
                st.caption(markdown_literal(f"The diagnosis given at {case.get('at')}: {case.get('category')}."))
            elif typed:
                st.caption("A case reference typed in: an earlier case, not the diagnosis shown.")
            else:
                st.caption("No case: ask for a diagnosis, or type the case reference of an earlier one.")
            show_errors([problems.pop("event_id")] if "event_id" in problems else [])
            # No preselected answer: a default would be recorded for every doctor who did not change it.
            st.selectbox("Confirmed diagnosis", spec.labels, index=None, key="fb-diagnosis", disabled=stale,
                         placeholder="choose the confirmed diagnosis")
            show_errors([problems.pop("diagnosis")] if "diagnosis" in problems else [])
            if spec.orphan_slice:  # a model of data without a rare-disease slice does not count the id anywhere
                st.text_input("Rare disease (optional: ORPHA:, OMIM: or DECIPHER: id)", key="fb-disease",
                              disabled=stale,
                              help="Counts the case in the orphan-disease slice of live quality monitoring.")
                show_errors([problems.pop("disease_id")] if "disease_id" in problems else [])
            # No max_chars: the browser drops a paste longer than it whole, silently; the client refuses a note over
            # MAX_NOTE by name, and the note stays to be shortened.
            st.text_area("Note (optional; no names or identifying details)", key="fb-note", disabled=stale,
                         help=f"Up to {MAX_NOTE:,} characters.")
            show_errors([f"{k}: {v}" for k, v in problems.items()])
            st.form_submit_button("Record confirmed diagnosis", key="fb-submit", on_click=send_feedback,
                                  args=(config, spec), disabled=stale)
        if outcome is not None:
            if outcome.ok and outcome.replaced is not None:  # another record of this case was there: said, not hidden
                st.warning(markdown_literal(outcome.recorded or ""), icon=":material/history:")
            elif outcome.ok:
                st.success(markdown_literal(outcome.recorded or ""))
            elif outcome.message:
                st.error(markdown_literal(outcome.message))


def patient_form(config: AppConfig, spec: FormSpec, outcome: Outcome | None, accepted: bool) -> None:
    failure = outcome.failure if outcome is not None else None
    by_field = failure.fields.by_field if failure is not None else {}
    warnings = outcome.warnings if outcome is not None and outcome.ok else {}
    for f in spec.terms_fields:
        symptom_picker(f, _index(tuple(sorted(spec.known_terms))), by_field.get(f.name, []), terms_keys(spec, f))
    # Not an st.form: a form's values reach the app only when it is submitted, so a value edited after a diagnosis
    # could not be told from the one the diagnosis is of (stale_result). Each field reaches the app as it is edited.
    with st.container(key="patient", border=True):
        for group, fields in spec.groups():
            fields = [f for f in fields if f.kind != "terms"]
            if not fields:
                continue
            st.markdown(f"**{group}**")
            columns = st.columns(2 if len(fields) > 1 else 1)
            for i, f in enumerate(fields):
                with columns[i % len(columns)], st.container(key="field-" + f.name):
                    field_widget(f, spec)
                    show_errors(by_field.get(f.name, []))
                    show_warnings(warnings.get(f.name, []))
        if failure is not None:
            st.error(markdown_literal(failure.message), icon=":material/block:")
            show_errors(failure.fields.general)
        st.button("Get diagnosis", key="submit", type="primary", disabled=not accepted, on_click=submit,
                  args=(config, spec))
    st.button("New patient", key="new-patient", on_click=new_patient, args=(spec,),
              help="Clear the form, the symptoms and the result.")


# ------------------------------------------------------------------------------------------------ page

def main() -> None:
    # An emoji icon is an inline SVG; a ':material/…:' one made every doctor's browser fetch it from Google's font
    # server (fonts.gstatic.com): a request outside the hospital on each page load, refused by the proxy's policy.
    st.set_page_config(page_title="Diagnosa", page_icon="🩺", layout="wide")
    st.title("Diagnosa", anchor=False)  # no focusable "link to heading" (one more Tab stop, named alike)
    try:
        config = AppConfig.from_env(os.environ)
        spec = _spec(config.model)
    except (ConfigError, FormError) as err:
        st.error(f"The app is not configured correctly: {err}")
        st.stop()
    st.caption(header_caption(config))
    settle()  # a request's outcome that its callback was stopped before putting in place
    client = client_for(config)
    if isinstance(client, Failure):  # the form still shows: the values are kept for when it can be called
        st.error(markdown_literal(client.message), icon=":material/key_off:")

    with st.expander(f"Data-use policy (version {POLICY_VERSION})", expanded=not st.session_state.get("policy_accepted")):
        st.markdown(POLICY_MARKDOWN)
    accepted = st.checkbox(ACCEPT_LABEL, key="policy_accepted")
    if not accepted:
        st.info("Accept the data-use policy to send a patient's data for a diagnosis.")
    if st.session_state.get("blocked"):
        st.error("Nothing was sent: accept the data-use policy first.")

    outcome: Outcome | None = st.session_state.get("outcome")

    form_column, result_column = st.columns([3, 2], gap="large")
    with form_column:
        patient_form(config, spec, outcome, accepted)
    with result_column:
        asked = st.session_state.get(ASKED)
        if asked and not asked.get("done"):
            awaiting(asked)
        if outcome is not None and outcome.ok:
            show_result(outcome, spec, config)
        else:
            st.info("The diagnosis appears here.", icon=":material/clinical_notes:")
        feedback_section(config, spec, client)


main()
