"""The endpoint server's process: the model loaded by its workers, data capture into the lake, the feedback token.

Started two ways, one code: ``python -m inference.serve`` is what the local executor's endpoints run
(pipelines/local_endpoints.py: its own arguments, never the CLI's), and ``diagnosa serve`` runs :func:`start` too,
then prints an example request. :func:`start` returns a server that is listening with its model loaded, or raises
:class:`ServeError` saying why (a port taken, a model that does not load, a capture spool in use).
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from diagnosa.data.validate import clip
from inference.limits import TOKEN_ENV, token_problem

if TYPE_CHECKING:
    from diagnosa.lake import DataLake
    from inference.server import EndpointServer

MODEL_LOAD_TIMEOUT = 300.0  # seconds a start waits for the model (and every worker) to load


class ServeError(Exception):
    """The server could not start: what is wrong, in the operator's words (exit status 2)."""


@dataclass(frozen=True)
class ServeSettings:
    model_dir: Path  # a model folder (metadata.json + model.joblib)
    endpoint_name: str
    host: str = "127.0.0.1"
    port: int = 8080
    lake: DataLake | None = None  # where captured requests go (capture/<endpoint>/); None: capture off
    capture_sampling: int = 100
    capture_spool: str | None = None
    capture_fsync: bool = False
    workers: int | None = None  # None: one per CPU core available
    feedback_token: str | None = None


def token_from_environment() -> str | None:
    """The feedback token in $DIAGNOSA_FEEDBACK_TOKEN (stripped; None when unset or empty); ServeError when no client
    could send it: the server would start and refuse every feedback."""
    token = (os.environ.get(TOKEN_ENV) or "").strip() or None
    problem = token_problem(token) if token is not None else None
    if problem:
        raise ServeError(f"the feedback token in ${TOKEN_ENV} {problem}")
    return token


def start(settings: ServeSettings) -> EndpointServer:
    """The endpoint server of ``settings``, listening, its model loaded; ServeError when it cannot be."""
    from inference.capture import DataCapture, SpoolBusy
    from inference.handler import freeze_loaded, limit_process_threads
    from inference.server import EndpointServer
    from inference.workers import default_workers

    limit_process_threads()  # requests run concurrently: one math thread each (docs/serving.md, Performance)
    capture = None
    if settings.lake is not None and settings.capture_sampling > 0:
        try:
            capture = DataCapture(settings.lake, settings.endpoint_name, sampling_percentage=settings.capture_sampling,
                                  spool_dir=settings.capture_spool, fsync=settings.capture_fsync)
        except SpoolBusy as err:
            raise ServeError(f"{err} (another server captures for endpoint {settings.endpoint_name}: stop it, or give "
                             "this one --capture-spool DIR)") from None
        except OSError as err:  # a spool that is a file, or where no folder can be made: bad input
            from diagnosa.files import os_problem

            raise ServeError(f"cannot use the capture spool {settings.capture_spool or 'folder'}: {os_problem(err)}"
                             + (f" ({err.filename})" if err.filename else "")) from None
    workers = settings.workers if settings.workers is not None else default_workers()
    endpoint = EndpointServer(str(settings.model_dir), endpoint_name=settings.endpoint_name, host=settings.host,
                              port=settings.port, capture=capture, workers=workers,
                              feedback_token=settings.feedback_token)
    try:
        endpoint.start()
    except OSError as err:
        taken = (": another process listens there; choose another --port (0: any free one)"
                 if err.errno == errno.EADDRINUSE else "")
        raise ServeError(f"cannot listen on {clip(settings.host, 260)}:{settings.port}: {err.strerror or err}{taken}"
                         ) from None
    try:  # a model that cannot load is a failed start, not a server answering /ping 500 forever
        endpoint.wait_until_ready(MODEL_LOAD_TIMEOUT)
    except (RuntimeError, TimeoutError) as err:
        endpoint.stop()
        raise ServeError(f"not serving {settings.model_dir}: {err}") from None
    freeze_loaded()  # with workers=0 the model lives in this process (workers freeze their own)
    return endpoint


def main(argv: list[str] | None = None) -> int:
    """``python -m inference.serve``: serve a model folder until SIGTERM (the local executor's endpoints)."""
    from diagnosa.lake import DataLake, LakeError
    from diagnosa.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m inference.serve", description="Diagnosa's endpoint server")
    parser.add_argument("--workspace", required=True,
                        help="the workspace whose endpoint this is (`diagnosa endpoint stop` finds its servers by it)")
    parser.add_argument("--lake", required=True, help="the lake captured requests go to (capture/<endpoint>/)")
    parser.add_argument("--model", required=True, help="the model folder")
    parser.add_argument("--endpoint-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--capture-sampling", type=int, default=100)
    args = parser.parse_args(argv)
    configure_logging(stream=sys.stderr)
    try:
        lake = DataLake.from_uri(args.lake) if args.capture_sampling > 0 else None
        endpoint = start(ServeSettings(Path(args.model), args.endpoint_name, host=args.host, port=args.port,
                                       lake=lake, capture_sampling=args.capture_sampling,
                                       feedback_token=token_from_environment()))
    except (ServeError, LakeError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"local endpoint '{args.endpoint_name}' on {endpoint.url} (model {args.model})", flush=True)
    endpoint.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
