"""`lucidlm tutorial`: the lessons in the browser, explanation beside editable code, and a Run button.

Run executes code on this machine, so the app is locked down the way Jupyter's is:
- it listens on 127.0.0.1 only;
- every request must carry the random token printed at start (in the URL's `?token=`, after which the page
  keeps it in a same-site cookie, or in an `X-Tutorial-Token` header); without it: 403;
- a request whose Origin or Host is not this server (another web page, a DNS-rebinding attack): 403;
- a cell runs in a fresh Python subprocess, in a PID namespace of its own where the machine allows one
  (nothing it starts outlives it), in its own temporary directory, with a wall-clock limit, a memory limit and
  a cap on its processes (`CellCap`), so a fork bomb stops at the cap (docs/reliability.md says what is
  contained and what is not).

The pages are the built site's (site.py), with every lesson live and its cells run here: a cell runs together
with the cells the page ran before it (as edited), because lessons build on earlier cells, and only its own
output is shown, with any PNG it saved. The page's Stop (POST /api/stop) ends the cells running now.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel

from lucidlm.tutorial import sandbox
from lucidlm.tutorial.lessons import lesson_files
from lucidlm.tutorial.runner import RunnerLimits, run_cells
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


class RunBody(BaseModel):
    cells: list[str]  # the code cells from the lesson's first down to the one to run, as edited


MAX_WAITING_CELLS = 16  # requests waiting for their turn; more are refused (503) until some have run


class CellTurns:
    """Cells take turns: one runs, the others wait in the order they came. So the runner's limits bound the
    server's cells together: pages that send many cells at once hold one cell's memory and processes, not many."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self.waiting >= MAX_WAITING_CELLS:
            raise APIError(503, f"{self.waiting} cells are waiting for their turn to run; run this one when they end")
        self.waiting += 1
        try:
            await self.lock.acquire()  # a request whose client leaves while it waits leaves the line
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self.lock.release()


def create_tutorial_app(token: str, limits: RunnerLimits | None = None) -> FastAPI:
    limits = limits or RunnerLimits()

    async def lifespan(app: FastAPI):
        # without a PID namespace, the orphans of a cell come to this server, which ends them
        adopting = not sandbox.pid_namespace_command() and sandbox.become_subreaper()
        yield
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
    entries = lesson_entries(lesson_files(), "server")
    stops: set[threading.Event] = set()  # one for each cell running or waiting now, which /api/stop sets
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
        body: RunBody = await parse_body(request, RunBody)
        if not body.cells:
            raise APIError(400, "cells must hold at least the cell to run", "cells")
        stop = threading.Event()
        stops.add(stop)
        try:
            async with turns.turn():
                return JSONResponse(await asyncio.to_thread(run_cells, body.cells, limits, stop))
        finally:
            stops.discard(stop)

    @app.post("/api/stop")
    async def stop_cells():
        """The page's Stop: every cell running now is ended (the tutorial is one learner's, behind its token)."""
        for stop in list(stops):
            stop.set()
        return {"stopped": len(stops)}

    return app
