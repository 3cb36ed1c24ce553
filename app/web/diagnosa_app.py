"""The doctors' app: data-use policy, patient form, diagnosis, confirmed diagnosis.

Run it with ``diagnosa app`` (see docs/app.md). This script only lays out widgets; what they do
lives in the ``app`` package, tested on its own. Patient values stay in this browser session's
server-side state (``st.session_state``): nothing is logged, written to disk, put in the URL or
in browser storage.
"""
from __future__ import annotations

import logging
import os
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
from diagnosa.text import markdown_literal
from inference.client import ClientFailure
from inference.feedback import MAX_NOTE

# Request bodies must never reach a log, whatever level the host process configured.
for _name in ("botocore", "boto3", "urllib3", "s3transfer"):
    logging.getLogger(_name).setLevel(logging.WARNING)

FIELD = "in-"  # widget keys of the patient form: "in-<field name>"
SYMPTOMS = "symptoms"  # the chosen HPO ids


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

def add_symptom(term: str) -> None:
    chosen = list(st.session_state.get(SYMPTOMS, []))
    if term not in chosen:
        st.session_state[SYMPTOMS] = chosen + [term]


def remove_symptom(term: str) -> None:
    st.session_state[SYMPTOMS] = [t for t in st.session_state.get(SYMPTOMS, []) if t != term]


FEEDBACK_ANSWERS = ("fb-diagnosis", "fb-disease", "fb-note")  # what the doctor chose for one case


def clear_feedback(*, reference: bool) -> None:
    """Forget the feedback answers (and with ``reference``, the case reference and its case): they belong to one
    case. Carried over, the previous patient's confirmed diagnosis, disease id and note were recorded for the next."""
    for key in FEEDBACK_ANSWERS + (("fb-event", "fb-case") if reference else ()):
        st.session_state.pop(key, None)


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
    st.session_state["outcome_values"] = values  # what the result is of (a later edit is told: stale_result)
    values, problems = read_numbers(spec, values)
    if problems:  # a value typed that is not a number: nothing is sent, the problem is shown under its field
        st.session_state["outcome"] = Outcome(failure=Failure(
            "rejected", "Nothing was sent: correct the fields marked in red and ask again.", FieldErrors(problems)))
        return
    client = client_for(config)
    if isinstance(client, Failure):  # no client (the AWS credentials): nothing was sent
        st.session_state["outcome"] = Outcome(failure=client)
        return
    outcome = diagnose(client, build_record(spec, values), config, spec)
    st.session_state["outcome"] = outcome
    reference = case_reference(outcome, config) if outcome.ok else None
    if reference:  # a new case: the feedback form starts empty, with its reference
        st.session_state["fb-event"] = reference
        st.session_state["fb-case"] = {"event_id": reference, "at": outcome.received_at,
                                       "category": (outcome.result or {}).get("category")}


def form_values(spec: FormSpec) -> dict[str, Any]:
    """The patient's values as the widgets hold them (the measurements as typed), the chosen symptoms included."""
    values = {f.name: st.session_state.get(FIELD + f.name) for f in spec.fields}
    if spec.terms_field is not None:
        values[spec.terms_field.name] = list(st.session_state.get(SYMPTOMS, []))
    return values


def stale_result(spec: FormSpec) -> bool:
    """Whether the values have changed since the diagnosis shown was asked for. In the browser a form's fields reach
    the app only when it is submitted (which asks again), so what changes in between is the symptoms (chosen outside
    the form)."""
    asked = st.session_state.get("outcome_values")
    return asked is not None and asked != form_values(spec)


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
    for key in [k for k in st.session_state if str(k).startswith((FIELD, "fb-"))]:
        del st.session_state[key]
    for key in (SYMPTOMS, "outcome", "outcome_values", "feedback_outcome", "symptom_query", "blocked"):
        st.session_state.pop(key, None)


# ------------------------------------------------------------------------------------------------ widgets

def term_key(term: str) -> str:
    """A widget key for an HPO id that is also a valid CSS class ('HP:0001945' → 'HP_0001945')."""
    return term.replace(":", "_")


def field_widget(f: FormField, spec: FormSpec) -> None:
    key = FIELD + f.name
    # A widget's label and help are markdown to Streamlit: an own dataset's column named '[site](http://…)' was a link
    # in the doctor's form, '$x^2$' a formula, a unit '10*9/L' half in italics. They are the column's words, as text.
    title, help_ = markdown_literal(f.title), f.help and markdown_literal(f.help)
    if f.kind in ("integer", "number"):
        # Text, read by app.form.parse_number: the browser's number field drops a decimal comma (15,2 became 152,
        # an age of 6,5 became 65), cut a decimal of a whole number (67.5 became 67), let go of a value too big for
        # it, and its display rounded what was typed (0.004 showed as 0.00 and was sent as 0.004). No max_chars:
        # Streamlit drops a paste longer than it whole, silently; parse_number refuses a value too long, by field.
        st.text_input(title, key=key, help=help_, placeholder="not recorded")
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
        st.text_input(title, key=key)


def show_errors(problems: list[str]) -> None:
    for problem in problems:  # the endpoint's words may quote what was typed: shown as text, never as markdown
        st.error(markdown_literal(problem), icon=":material/error:")


def show_warnings(warnings: list[str]) -> None:
    for warning in warnings:  # an input the model ignored (it quotes what was typed: text, never markdown)
        st.warning(markdown_literal(warning), icon=":material/warning:")


def symptom_picker(f: FormField, index: TermIndex, problems: list[str]) -> None:
    with st.container(key="field-" + f.name):
        st.markdown(f"**{f.label}**")
        query = st.text_input("Search symptoms by name", key="symptom_query", type="search", live=True,
                              placeholder="e.g. fever, shortness of breath, abdominal pain")
        for term in index.search(query or ""):
            if term.id not in st.session_state.get(SYMPTOMS, []):
                st.button(term.label, key="add-" + term_key(term.id), icon=":material/add:", on_click=add_symptom,
                          args=(term.id,), type="tertiary")
        if query and not index.search(query):
            st.caption("No symptom matches that search.")
        chosen = st.session_state.get(SYMPTOMS, [])
        if chosen:
            st.caption("Chosen (click to remove):")
            with st.container(horizontal=True):
                for term in chosen:
                    st.button(index.name(term), key="remove-" + term_key(term), icon=":material/close:", on_click=remove_symptom,
                              args=(term,))
        else:
            st.caption("No symptoms chosen.")
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
    st.subheader("Diagnosis")
    if stale_result(spec):
        st.caption(STALE)
    st.markdown(f"### {markdown_literal(headline(result))}")  # a label of the user's own is text
    note = decision_note(result)
    if note:
        st.caption(markdown_literal(note))
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
        with st.form("feedback", border=False):
            st.text_input("Case reference", key="fb-event", help="Shown with each diagnosis; another case's can be "
                                                                  "typed.")
            typed = (st.session_state.get("fb-event") or "").strip()
            if typed and typed == case.get("event_id"):  # which case the reference is: the one beside it
                st.caption(markdown_literal(f"The diagnosis given at {case.get('at')}: {case.get('category')}."))
            elif typed:
                st.caption("A case reference typed in: an earlier case, not the diagnosis shown.")
            else:
                st.caption("No case: ask for a diagnosis, or type the case reference of an earlier one.")
            show_errors([problems.pop("event_id")] if "event_id" in problems else [])
            # No preselected answer: a default would be recorded for every doctor who did not change it.
            st.selectbox("Confirmed diagnosis", spec.labels, index=None, key="fb-diagnosis",
                         placeholder="choose the confirmed diagnosis")
            show_errors([problems.pop("diagnosis")] if "diagnosis" in problems else [])
            if spec.orphan_slice:  # a model of data without a rare-disease slice does not count the id anywhere
                st.text_input("Rare disease (optional: ORPHA:, OMIM: or DECIPHER: id)", key="fb-disease",
                              help="Counts the case in the orphan-disease slice of live quality monitoring.")
                show_errors([problems.pop("disease_id")] if "disease_id" in problems else [])
            # No max_chars: the browser drops a paste longer than it whole, silently; the client refuses a note over
            # MAX_NOTE by name, and the note stays to be shortened.
            st.text_area("Note (optional; no names or identifying details)", key="fb-note",
                         help=f"Up to {MAX_NOTE:,} characters.")
            show_errors([f"{k}: {v}" for k, v in problems.items()])
            st.form_submit_button("Record confirmed diagnosis", key="fb-submit", on_click=send_feedback,
                                  args=(config, spec))
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
    if spec.terms_field is not None:
        symptom_picker(spec.terms_field, _index(tuple(sorted(spec.known_terms))),
                       by_field.get(spec.terms_field.name, []))
    with st.form("patient", enter_to_submit=False):
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
        st.form_submit_button("Get diagnosis", key="submit", type="primary", disabled=not accepted,
                              on_click=submit, args=(config, spec))
    st.button("New patient", key="new-patient", on_click=new_patient, args=(spec,),
              help="Clear the form, the symptoms and the result.")


# ------------------------------------------------------------------------------------------------ page

def main() -> None:
    st.set_page_config(page_title="Diagnosa", page_icon=":material/stethoscope:", layout="wide")
    st.title("Diagnosa")
    try:
        config = AppConfig.from_env(os.environ)
        spec = _spec(config.model)
    except (ConfigError, FormError) as err:
        st.error(f"The app is not configured correctly: {err}")
        st.stop()
    st.caption(header_caption(config))
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
        if outcome is not None and outcome.ok:
            show_result(outcome, spec, config)
        else:
            st.info("The diagnosis appears here.", icon=":material/clinical_notes:")
        feedback_section(config, spec, client)


main()
