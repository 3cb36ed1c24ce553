"""The Streamlit script (``diagnosa_app.py``), kept in a folder of its own: Streamlit puts a script's
folder first on ``sys.path``, and here that folder holds nothing another import could pick up."""
