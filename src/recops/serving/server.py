"""Running the API with uvicorn: in the foreground (``recops serve``) or in a background thread on a
loopback port (the serving check, tests)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["ServerError", "build_app", "run_in_thread", "serve"]


class ServerError(RuntimeError):
    """The server did not start (or stop) in time."""


def build_app(params: Any, source: Any, *, freeze_gc: bool = False) -> Any:
    """The application serving ``source`` (a :class:`~recops.serving.holder.ModelSource`), polled every
    ``params.poll_seconds``; the first poll runs at startup. ``freeze_gc``: see ``ModelPoller`` (for a
    process that only serves)."""
    from recops.serving.app import create_app
    from recops.serving.holder import ModelHolder, ModelPoller

    holder = ModelHolder()
    return create_app(holder, params, poller=ModelPoller(holder, source, params.poll_seconds, freeze_gc=freeze_gc))


def serve(app: Any, host: str, port: int, *, log_level: str = "info") -> None:
    """Serve ``app`` until interrupted (one process, one event loop; handlers run in its thread pool)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on")


@contextlib.contextmanager
def run_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, *,
                  start_timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` from a background thread for the duration of the block; yields the base URL
    (``port=0``: a free port). Startup (lifespan) has completed when the block starts."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="recops-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive():
                raise ServerError(f"uvicorn on {host}:{bound_port} exited during startup (see the log above)")
            if time.monotonic() > deadline:
                raise ServerError(f"uvicorn on {host}:{bound_port} did not start within {start_timeout:.0f} s")
            time.sleep(0.01)
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(start_timeout)
        sock.close()
        if thread.is_alive():
            log.warning("uvicorn on %s:%s did not stop within %.0f s", host, bound_port, start_timeout)
