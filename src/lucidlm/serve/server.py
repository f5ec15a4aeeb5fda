"""Running an app on uvicorn: in the foreground for `lucidlm serve`/`tutorial`, or in a thread for tests,
benchmarks and notebooks (`with BackgroundServer(app) as url: ...`)."""

from __future__ import annotations

import os
import socket
import threading
import time

import uvicorn

from lucidlm.errors import ConfigError


def decoding_threads() -> int:
    """PyTorch threads for a CPU server: all cores but one, which is left to the HTTP side (parsing, JSON,
    sockets). Decoding small batches gains little from the last core, and a PyTorch thread that has to wait
    for a busy core stalls every matmul (benchmarks/serve_load.py measures what giving one up gains)."""
    return max(1, (os.cpu_count() or 2) - 1)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; a port in use or a bad host is a one-line error instead of uvicorn's exit."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog from now on, even before uvicorn has started
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port or --host") from None
    return sock


def uvicorn_server(app) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))


def run_forever(app, sock: socket.socket) -> None:
    uvicorn_server(app).run(sockets=[sock])


class BackgroundServer:
    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.app, self.host, self.port = app, host, port

    def __enter__(self) -> str:
        sock = bind(self.host, self.port)
        self.server = uvicorn_server(self.app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return f"http://{self.host}:{sock.getsockname()[1]}"

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
