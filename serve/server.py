"""Run the app on uvicorn: in the foreground (`edgelm serve`), or in a background thread (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _config(app, log_level: str):
    import uvicorn

    # one process, no reload; the server answers Ctrl-C by finishing the running request's stream
    return uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5, access_log=False)


def serve(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Serve until interrupted."""
    import uvicorn

    config = _config(app, log_level)
    config.host, config.port = host, port
    uvicorn.Server(config).run()


class Running:
    """The app served on a free loopback port in a background thread, as a context manager:

        with Running(app) as server:
            OpenAI(base_url=server.url + "/v1", api_key="none")
    """

    def __init__(self, app, host: str = "127.0.0.1", log_level: str = "warning"):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(_config(app, log_level))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "Running":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
