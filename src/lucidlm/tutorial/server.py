"""`lucidlm tutorial`: the lessons in the browser, explanation beside editable code, and a Run button.

Run executes code on this machine, so the app is locked down the way Jupyter's is:
- it listens on 127.0.0.1 only;
- every request must carry the random token printed at start (in the URL's `?token=`, after which the page
  keeps it in a same-site cookie, or in an `X-Tutorial-Token` header); without it: 403;
- a request whose Origin or Host is not this server (another web page, a DNS-rebinding attack): 403;
- a page's cells run in a kernel of its own (kernel.py): a Python process in a PID namespace of its own where
  the machine allows one (nothing it starts outlives it), in its own temporary directory, with a time limit per
  cell, a memory limit and a cap on its processes (`CellCap`), so a fork bomb stops at the cap
  (docs/reliability.md says what is contained and what is not).

The pages are the built site's (site.py), with every lesson live and its cells run here. Each page load names
a kernel (a random id); the kernel keeps the variables of the cells it ran, as a notebook's does, and a cell's
output streams back as it runs (POST /api/run answers in JSON lines). The page's Stop and Reset
(POST /api/stop) end its kernel and all it started. The server keeps `KernelLimits.kernels` kernels at most;
a page that opens another ends the one used least recently, and that page's next Run says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field

from lucidlm.tutorial import sandbox
from lucidlm.tutorial.kernel import Kernel, KernelLimits
from lucidlm.tutorial.lessons import lesson_files
from lucidlm.tutorial.site import faq_page, index_page, lesson_entries, lesson_page
from lucidlm.web import STYLE
from lucidlm.web.http import (
    APIError,
    BodyLimit,
    BrowserGuard,
    add_error_handlers,
    error_response,
    parse_body,
)

PAGE = Path(__file__).parent / "static"  # the course's scripts; the style sheet is the one of web/static
COOKIE = "lucidlm_tutorial_token"
MAX_BODY_BYTES = 2_000_000  # a lesson's code cells, as edited, with room to spare


def new_token() -> str:
    return secrets.token_urlsafe(24)


# --- the app --------------------------------------------------------------------------------------------------


KERNEL_ID = r"^[A-Za-z0-9_-]{8,64}$"


class RunBody(BaseModel):
    kernel: str = Field(pattern=KERNEL_ID)  # the page's, a random id it chose
    code: str  # the cell, as edited


class StopBody(BaseModel):
    kernel: str = Field(pattern=KERNEL_ID)


class Kernels:
    """The pages' kernels by id, at most `limits.kernels`; the one used least recently makes room. A kernel
    that ended (a limit, Stop, or room for another) is forgotten; `ended[id]` says why to its page once."""

    def __init__(self, limits: KernelLimits):
        self.limits = limits
        self.open: OrderedDict[str, Kernel] = OrderedDict()  # least recently used first
        self.ended: dict[str, str] = {}
        self.lock = threading.Lock()

    def get(self, kernel_id: str) -> Kernel:
        """The page's kernel, started if it has none (in a worker thread: starting one takes a moment)."""
        with self.lock:
            kernel = self.open.get(kernel_id)
            if kernel is not None and not kernel.ended:
                self.open.move_to_end(kernel_id)
                return kernel
            self.open.pop(kernel_id, None)
            evicted = []
            while len(self.open) >= self.limits.kernels:
                oldest_id, oldest = self.open.popitem(last=False)
                self.ended[oldest_id] = (
                    f"this page's kernel was ended to make room for another lesson's (the tutorial keeps "
                    f"{self.limits.kernels} at once, `--kernels` sets it); Run starts a fresh one"
                )
                evicted.append(oldest)
        for oldest in evicted:
            oldest.close("room")
        kernel = Kernel(self.limits)
        with self.lock:
            self.open[kernel_id] = kernel
        return kernel

    def stop(self, kernel_id: str) -> bool:
        with self.lock:
            kernel = self.open.pop(kernel_id, None)
        if kernel is None:
            return False
        kernel.close("stopped")
        return True

    def close(self) -> None:
        with self.lock:
            kernels, self.open = list(self.open.values()), OrderedDict()
        for kernel in kernels:
            kernel.close()


MAX_WAITING_CELLS = 16  # requests waiting for their turn; more are refused (503) until some have run


class CellTurns:
    """Cells take turns: one runs, the others wait in the order they came. So the limits bound the server's
    cells together: pages that send many cells at once run one cell's memory and processes, not many. A
    request joins the line when it comes (`join`: a 503 when the line is full) and waits for its `turn`."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0

    def join(self) -> None:
        if self.waiting >= MAX_WAITING_CELLS:
            raise APIError(503, f"{self.waiting} cells are waiting for their turn to run; run this one when they end")
        self.waiting += 1

    def leave(self) -> None:
        self.waiting -= 1

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """The turn of a request that joined; it leaves the line when its turn comes (or its client goes)."""
        try:
            await self.lock.acquire()
        finally:
            self.leave()
        try:
            yield
        finally:
            self.lock.release()


def line(message: dict) -> bytes:
    return json.dumps(message).encode() + b"\n"


def create_tutorial_app(token: str, limits: KernelLimits | None = None) -> FastAPI:
    limits = limits or KernelLimits()
    kernels = Kernels(limits)

    async def lifespan(app: FastAPI):
        # without a PID namespace, the orphans of a cell come to this server, which ends them
        adopting = not sandbox.pid_namespace_command() and sandbox.become_subreaper()
        yield
        await asyncio.to_thread(kernels.close)
        if adopting:
            sandbox.become_subreaper(False)

    app = FastAPI(title="lucidlm tutorial", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    @app.middleware("http")
    async def token_guard(request: Request, call_next):
        given = (
            request.query_params.get("token")
            or request.headers.get("x-tutorial-token")
            or request.cookies.get(COOKIE)
            or ""
        )
        if not secrets.compare_digest(given.encode(), token.encode()):
            return error_response(403, "open the URL with the token that `lucidlm tutorial` printed", kind="forbidden")
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    app.add_middleware(BrowserGuard)  # the outermost, as the API server's: another Host or Origin is refused first
    add_error_handlers(app)

    # The built site's pages (site.py), every lesson live, its cells run here; and the files they load, by name.
    entries = lesson_entries(lesson_files())
    stops: dict[str, set[threading.Event]] = {}  # kernel -> one for each of its cells running or waiting now
    turns = CellTurns()
    files = {name: PAGE / name for name in ("course.js", "server-python.js", "editor/codemirror.js")}
    files["style.css"] = STYLE

    @app.get("/")
    @app.get("/index.html")
    async def index():
        return HTMLResponse(index_page(entries, "server"))

    @app.get("/faq.html")
    async def faq():
        return HTMLResponse(faq_page())

    @app.get("/lessons/{page}")
    async def lesson(page: str):
        found = [index for index, entry in enumerate(entries) if entry["page"] == page]
        if not found:
            raise APIError(404, f"no lesson page {page}: the lessons are 01.html to {entries[-1]['page']}")
        return HTMLResponse(lesson_page(entries, found[0], None, "server", None))

    @app.get("/{name:path}")
    async def page_file(name: str):
        if name not in files:  # only the page's own files: a path of the request never reaches the disk
            raise APIError(404, f"no such file: /{name}")
        media = "text/css" if name.endswith(".css") else "text/javascript"
        return FileResponse(files[name], media_type=media)

    @app.post("/api/run")
    async def run(request: Request):
        """The cell's output as JSON lines ({stream, text}) while it runs, then its result (kernel.Kernel.run),
        with `rest`: what of each stream was not sent as it came."""
        body: RunBody = await parse_body(request, RunBody)
        turns.join()
        in_line = True
        stop = threading.Event()
        stops.setdefault(body.kernel, set()).add(stop)
        loop, pieces = asyncio.get_running_loop(), asyncio.Queue()

        def send(stream: str, text: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, {"stream": stream, "text": text})

        def run_in_kernel() -> dict:
            return kernels.get(body.kernel).run(body.code, send, stop)

        async def answer() -> AsyncIterator[bytes]:
            nonlocal in_line
            running = None
            try:
                if body.kernel in kernels.ended:
                    yield line({"status": "ended", "note": kernels.ended.pop(body.kernel)})
                    return
                in_line = False
                async with turns.turn():
                    if stop.is_set():
                        yield line({"status": "stopped", "note": "stopped at the page's request"})
                        return
                    running = asyncio.ensure_future(asyncio.to_thread(run_in_kernel))
                    while not (running.done() and pieces.empty()):
                        waiting = asyncio.ensure_future(pieces.get())
                        await asyncio.wait({waiting, running}, return_when=asyncio.FIRST_COMPLETED)
                        if waiting.done():
                            yield line(waiting.result())
                        else:
                            waiting.cancel()
                    try:
                        yield line(running.result())
                    except OSError as error:
                        yield line({"status": "error", "stderr": f"the kernel did not start: {error}"})
            finally:
                if in_line:  # it never waited for its turn
                    turns.leave()
                if running is not None and not running.done():  # the page left: its cell ends
                    stop.set()
                stops.get(body.kernel, set()).discard(stop)

        return StreamingResponse(answer(), media_type="application/x-ndjson")

    @app.post("/api/stop")
    async def stop_kernel(request: Request):
        """The page's Stop or Reset: its cells running or waiting end, and so does its kernel."""
        body: StopBody = await parse_body(request, StopBody)
        busy = stops.get(body.kernel, set())
        for stop in list(busy):
            stop.set()
        if not busy:
            await asyncio.to_thread(kernels.stop, body.kernel)
        return {"stopped": body.kernel}

    return app
