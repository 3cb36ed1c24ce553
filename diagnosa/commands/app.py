"""``diagnosa app``: the doctors' Streamlit app over the local endpoint or a SageMaker endpoint.

The command checks the configuration, then becomes (``exec``) the Streamlit server as :mod:`app.launch`
starts it.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from diagnosa.commands.common import (
    UsageError,
    endpoint_url,
    int_in,
    local_workspace,
    model_folder,
    positive_seconds,
    resolve_endpoint_name,
    sagemaker_name,
    workspace,
)
from diagnosa.net import free_port
from diagnosa.services import ServiceError
from inference.limits import printable_line


def cmd_app(args: argparse.Namespace) -> int:
    from app.config import AppConfig, ConfigError, model_endpoint_name
    from app.form import FormError, load_form_spec
    from app.launch import app_url, base_path, streamlit_command

    # The numeric DIAGNOSA_APP_* as the app itself reads them: what a flag left out takes. Only those: the model is
    # --model's, whose default is $DIAGNOSA_APP_MODEL, resolved below as the flag is (a model.tar.gz unpacked); read
    # raw here, the variable stopped the command even when --model named another model.
    try:
        defaults = AppConfig.settings_from_env(os.environ)
    except ConfigError as err:
        raise UsageError(str(err)) from None
    try:
        path = base_path(args.base_path)
    except ValueError as err:
        raise UsageError(f"--base-path: {err}") from None
    model = str(model_folder(Path(args.model), workspace(args))) if args.model else None
    if args.endpoint_url and args.region:
        raise UsageError("--region is for a SageMaker endpoint; the local endpoint is chosen by --endpoint-url")
    if args.endpoint_url:
        _served_by_url(args, model, defaults["timeout"] if args.timeout is None else args.timeout)
    elif not args.region:
        _local_endpoint_url(args, model)
    if model is None and args.endpoint_name and not args.region:
        model = _local_endpoint_model(args)
    if model is None and args.endpoint_url:
        _refuse_the_builtin_form_for_another_dataset(args, defaults["timeout"] if args.timeout is None else args.timeout)
    try:
        load_form_spec(model)  # a bad model folder fails here, not in the browser, saying what is wrong with it
        config = AppConfig(endpoint_name=args.endpoint_name or model_endpoint_name(model),
                           endpoint_url=(args.endpoint_url or "").rstrip("/") or None,
                           region=args.region, model=model, lake=args.feedback_lake,
                           **{name: defaults[name] if getattr(args, name) is None else getattr(args, name)
                              for name in ("timeout", "attempts", "top_k", "differential")})
    except (ConfigError, FormError) as err:
        raise UsageError(str(err)) from None
    # --port 0: a free port chosen here, so the address printed is the one the app listens on (Streamlit's own
    # choice was never printed: 'http://127.0.0.1:0').
    port = args.port or free_port(args.host)
    argv, env = streamlit_command(config.to_env(), host=args.host, port=port, path=path)
    named = f", endpoint '{config.endpoint_name}'" if config.is_local else ""  # SageMaker's description names it
    print(printable_line(f"Diagnosa app on {app_url(args.host, port, path)} → {config.description}{named} "
                         "(Ctrl-C stops it)"), flush=True)
    # Become the Streamlit server: SIGTERM and Ctrl-C reach it directly, no orphan is left behind.
    os.execve(argv[0], argv, env)
    return 0  # pragma: no cover - execve does not return


def _served_by_url(args: argparse.Namespace, model: str | None, timeout: float) -> None:
    """--endpoint-name as --endpoint-url serves it (GET /ping), as `predict` and `feedback` take it: left out (and no
    --model naming its dataset's), the endpoint that server serves, whose form the app then shows; given, or
    --model's, refused when the server serves another. The app started as endpoint 'diagnosa' with the built-in
    cohort's form at a dataset's endpoint, and every diagnosis was refused ("Endpoint diagnosa … not found")."""
    from app.config import ConfigError, model_endpoint_name
    from inference.client import check_endpoint_url

    try:
        check_endpoint_url(args.endpoint_url)
    except ValueError:  # a URL that cannot work: the app's configuration says what is wrong with it, exit 2
        return
    by_model = args.endpoint_name is None and model is not None
    try:
        name = model_endpoint_name(model) if by_model else args.endpoint_name
    except ConfigError:  # not a model folder: the form's check below says what is wrong with it
        return
    probe = argparse.Namespace(endpoint_url=args.endpoint_url, timeout=timeout, endpoint_name=name)
    resolve_endpoint_name(probe, named_by=f"--model {model}: a model of" if by_model else None)
    args.endpoint_name = probe.endpoint_name


def _local_endpoint_url(args: argparse.Namespace, model: str | None) -> None:
    """Without --endpoint-url or --region, the workspace's local endpoint of that name (--endpoint-name, else
    --model's dataset's, else the built-in cohort's), as `predict` and `feedback` take it: the app took its form from
    that endpoint and sent every diagnosis to SageMaker's endpoint of the name, in no region at all. A local endpoint
    recorded but not running, or a mistyped name beside others, is refused at start (common.endpoint_url)."""
    from app.config import ConfigError, model_endpoint_name

    try:
        name = args.endpoint_name or model_endpoint_name(model)
    except ConfigError:  # not a model folder: the form's check says what is wrong with it
        return
    local = argparse.Namespace(**{**vars(args), "endpoint_name": name})
    url = endpoint_url(local)
    if url:
        args.endpoint_url, args.endpoint_name = url, name


def _refuse_the_builtin_form_for_another_dataset(args: argparse.Namespace, timeout: float) -> None:
    """With no model for the form (no --model, no workspace record of the endpoint: a hand-started `diagnosa serve`),
    the form is the built-in cohort's: refused at start when the server at --endpoint-url says it serves a model of
    another dataset, whose endpoint would refuse every diagnosis of that form."""
    from diagnosa.data.schema import BUILTIN_DATASET
    from inference.client import AnswerTimeout, served_dataset

    try:
        dataset = served_dataset(args.endpoint_url, min(timeout, 10.0))
    except AnswerTimeout:
        return  # the endpoint's name was read from it a moment ago: a slow server, which the app will say
    if dataset is not None and dataset != BUILTIN_DATASET:
        raise UsageError(f"{args.endpoint_url} serves a model of the dataset {dataset}, and no model folder says "
                         "what its form holds (no --model, and no local endpoint of this workspace serves there), so "
                         "the app would show the built-in cohort's form, whose fields that endpoint refuses: give "
                         "--model with the folder of the model it serves (the MODEL_DIR given to `diagnosa serve`, or "
                         "a model.tar.gz)")


def _local_endpoint_model(args: argparse.Namespace) -> str | None:
    """The model folder of the workspace's local endpoint --endpoint-name, for the form when --model is not given (a
    dataset of the user's own got the built-in cohort's form, whose fields its endpoint refuses); None, and the
    built-in form, for no such endpoint, one served elsewhere than --endpoint-url, or a model folder gone since."""
    try:
        record = local_workspace(args).endpoints().describe(args.endpoint_name)
    except ServiceError:  # an s3:// lake: no local endpoints
        return None
    if not record or not record.get("ModelDir"):
        return None
    model, url = record["ModelDir"], record.get("Url")
    if args.endpoint_url and url and urlsplit(args.endpoint_url).port != urlsplit(url).port:
        return None  # another server than the one recorded (by port: 'localhost' and 127.0.0.1 are one host)
    if not (Path(model) / "metadata.json").is_file():
        print(printable_line(f"warning: local endpoint '{args.endpoint_name}' served {model}, which is gone: the "
                             "built-in form"), file=sys.stderr)
        return None
    print(printable_line(f"form from the model local endpoint '{args.endpoint_name}' serves ({model})"))
    return str(model)


def _set(variable: str) -> str | None:
    """A DIAGNOSA_APP_* variable as a flag's default: empty or blank is unset, as the app's own config reads it (an empty
    one was refused as the flag given empty, or --endpoint-name's "must be a name")."""
    value = os.environ.get(variable)
    return value if value is not None and value.strip() else None


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("app", help="the doctors' app (Streamlit) over an endpoint",
                                 description="Serve the doctors' app: data-use policy, patient form, diagnosis. "
                                             "Give --endpoint-url for a local endpoint's server, or --region for a "
                                             "SageMaker endpoint; without either, the workspace's local endpoint of "
                                             "that name, as predict takes it. Either way the endpoint is the one of "
                                             "--model's dataset unless --endpoint-name names another.")
    parser.add_argument("--endpoint-url", default=_set("DIAGNOSA_APP_ENDPOINT_URL"),
                        help="the local endpoint, e.g. http://127.0.0.1:8080 (default $DIAGNOSA_APP_ENDPOINT_URL)")
    parser.add_argument("--endpoint-name", type=sagemaker_name, default=_set("DIAGNOSA_APP_ENDPOINT_NAME"),
                        help="the endpoint's name, SageMaker's or the local endpoint's (default "
                             "$DIAGNOSA_APP_ENDPOINT_NAME, else the endpoint of --model's dataset as `diagnosa run` "
                             "deploys it, e.g. aids-2 for the dataset aids_2; diagnosa for the built-in cohort)")
    parser.add_argument("--region", default=_set("DIAGNOSA_APP_REGION"),
                        help="AWS region of a SageMaker endpoint (default: the AWS SDK's)")
    parser.add_argument("--model", default=_set("DIAGNOSA_APP_MODEL"),
                        help="the model folder or model.tar.gz whose request schema shapes the form "
                             "(default: the model the workspace's local endpoint --endpoint-name serves, else the "
                             "built-in cohort's schema)")
    parser.add_argument("--feedback-lake", default=_set("DIAGNOSA_APP_LAKE"),
                        help="data lake (folder or s3://bucket/prefix) for confirmed diagnoses when the endpoint is a "
                             "SageMaker endpoint, which has no feedback route")
    parser.add_argument("--timeout", type=positive_seconds, default=None,
                        help="seconds to wait for a diagnosis (default $DIAGNOSA_APP_TIMEOUT, else 70: over SageMaker's 60 s "
                             "limit on a model's answer)")
    parser.add_argument("--attempts", type=int_in(1, 10, "--attempts"), default=None,
                        help="attempts per call, retries included (default $DIAGNOSA_APP_ATTEMPTS, else 2)")
    parser.add_argument("--top-k", type=int, default=None,
                        help="categories in the top-k list, at most the model's labels (default $DIAGNOSA_APP_TOP_K, "
                             "else the endpoint's: 3 or all the labels of a model with fewer)")
    parser.add_argument("--differential", type=int, default=None,
                        help="rare diseases whose annotations best match the symptoms, listed under the diagnosis as "
                             "decision support (default $DIAGNOSA_APP_DIFFERENTIAL, else 5; 0: none)")
    parser.add_argument("--host", default="127.0.0.1", help="address the app listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=int_in(0, 65535, "--port"), default=8501,
                        help="port the app listens on (default 8501; 0 picks a free one)")
    parser.add_argument("--base-path", default=_set("DIAGNOSA_APP_BASE_PATH"),
                        help="the URL path the app is served under behind a reverse proxy that keeps it, e.g. "
                             "diagnosa for https://tools.hospital.example/diagnosa/ (default $DIAGNOSA_APP_BASE_PATH, "
                             "else the root; docs/app.md)")
    parser.set_defaults(func=cmd_app)
