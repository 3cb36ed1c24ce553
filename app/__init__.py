"""The doctors' app: a Streamlit front end over the Diagnosa endpoint (``diagnosa app``).

The logic lives in plain, typed modules tested directly: :mod:`app.config` (which endpoint),
:mod:`app.form` (the form built from the model's request schema, the request built from the
form, the endpoint's field errors mapped back to the form), :mod:`app.terms` (symptom search over
HPO term names), :mod:`app.results` (calling the endpoint and turning answers and failures into
what the doctor reads) and :mod:`app.policy` (the data-use policy). The Streamlit script
(``app/web/diagnosa_app.py``) only lays these out.
"""
