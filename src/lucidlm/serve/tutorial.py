"""`lucidlm tutorial`: the lessons in the browser, explanation beside editable code, and a Run button.

Run executes code on this machine, so the app is locked down the way Jupyter's is:
- it listens on 127.0.0.1 only;
- every request must carry the random token printed at start (in the URL's `?token=`, after which the page
  keeps it in a same-site cookie, or in an `X-Tutorial-Token` header); without it: 403;
- a request whose Origin or Host is not this server (another web page, a DNS-rebinding attack): 403;
- a cell runs in a fresh Python subprocess, in its own process group and temporary directory, with a
  wall-clock limit (the whole group is killed at it), an address-space limit and a cap on its processes
  (`ProcessCap`), so a fork bomb stops at the cap.

A cell is run together with the lesson's code cells above it (as edited on the page), because lessons build
on earlier cells; only the output of the cell itself is shown, with any PNG it saved.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel

from lucidlm.errors import LucidError
from lucidlm.lessons import find_lesson, lesson_files, lesson_number, lesson_title
from lucidlm.serve.api import STATIC, APIError, add_error_handlers, error_response, parse_body

COOKIE = "lucidlm_tutorial_token"


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class RunnerLimits:
    seconds: float = 30.0
    memory_mib: int = 4096
    processes: int = 256  # processes and threads (PyTorch alone starts one thread per core)


# --- lessons as cells ---------------------------------------------------------------------------------------


def lesson_cells(path: Path) -> list[dict]:
    """The percent-format cells of a lesson: {"kind": "markdown", "html": ...} or {"kind": "code", "source": ...}."""
    cells, kind, lines = [], None, []

    def close() -> None:
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            cells.append({"kind": "markdown", "html": markdown_to_html(text)})
        elif kind == "code" and text:
            cells.append({"kind": "code", "source": text})

    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# %%"):
            close()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind == "markdown":
            lines.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        else:
            lines.append(line)
    close()
    return cells


def inline_markdown(text: str) -> str:
    """Code spans, math, bold and italics, after escaping HTML."""
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\$\$(.+?)\$\$", r'<span class="math display">\1</span>', text)
    text = re.sub(r"\$([^$]+)\$", r'<span class="math">\1</span>', text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', text)


def markdown_to_html(text: str) -> str:
    """The markdown the lessons use: headings, paragraphs, bullet and numbered lists, inline marks, math."""
    blocks, out = re.split(r"\n\s*\n", text), []
    for block in blocks:
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        heading = re.match(r"(#{1,4}) (.+)", lines[0])
        if heading:  # a heading, and the paragraph that may follow it without a blank line
            level = len(heading.group(1))
            out.append(f"<h{level + 1}>{inline_markdown(heading.group(2))}</h{level + 1}>")
            lines = lines[1:]
            if not lines:
                continue
        if all(re.match(r"\s*(-|\*|\d+\.) ", line) or line.startswith("  ") for line in lines):
            tag = "ol" if re.match(r"\s*\d+\.", lines[0]) else "ul"
            items, current = [], []
            for line in lines:
                if re.match(r"\s*(-|\*|\d+\.) ", line):
                    if current:
                        items.append(" ".join(current))
                    current = [re.sub(r"\s*(-|\*|\d+\.) ", "", line, count=1)]
                else:
                    current.append(line.strip())
            items.append(" ".join(current))
            out.append(f"<{tag}>" + "".join(f"<li>{inline_markdown(i)}</li>" for i in items) + f"</{tag}>")
        else:
            out.append(f"<p>{inline_markdown(' '.join(line.strip() for line in lines))}</p>")
    return "\n".join(out)


# --- running a cell -------------------------------------------------------------------------------------------


class ProcessCap:
    """At most `limit` processes and threads for one cell, so a fork bomb stops at the cap instead of filling
    the machine's process table. The first way this machine allows:

    - a `pids` control group of its own (cgroup v1, or v2 where this user may create one: root in a
      container, or a delegated systemd scope). It counts everything the cell starts, even a process that
      left the cell's process group, and `close` kills everything still in it.
    - RLIMIT_NPROC, for any user but root (whom the kernel exempts). The kernel compares it with all of this
      user's processes, so it is set to those already running plus `limit`.

    Where neither works the cell runs uncapped (`how` says so) and the time limit still ends it."""

    def __init__(self, limit: int):
        self.limit, self.group, self.nproc = limit, self._make_group(limit), None
        if self.group is not None:
            self.how = f"a pids control group ({self.group})"
        elif os.getuid() != 0:
            self.nproc = user_tasks() + limit
            self.how = "RLIMIT_NPROC"
        else:
            self.how = "none: running as root without a pids control group this user may create"

    @classmethod
    def probe(cls) -> str:
        """How this machine would cap a cell's processes (the same words as `how`)."""
        cap = cls(16)
        cap.close()
        return cap.how

    @staticmethod
    def _make_group(limit: int) -> Path | None:
        for parent in pids_cgroup_parents():
            group = parent / f"lucidlm-cell-{secrets.token_hex(6)}"
            try:
                group.mkdir()
            except OSError:
                continue
            try:
                (group / "pids.max").write_text(str(limit))
                return group
            except OSError:  # a directory, but not a control group with the pids controller
                with contextlib.suppress(OSError):
                    group.rmdir()
        return None

    def enter(self) -> None:
        """Called in the cell's process before it starts Python."""
        if self.group is not None:
            (self.group / "cgroup.procs").write_text(str(os.getpid()))
        elif self.nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.nproc, self.nproc))

    def reached(self) -> bool:
        """Whether a fork was refused because of the cap (known for the control group only)."""
        if self.group is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            return int((self.group / "pids.events").read_text().split()[-1]) > 0
        return False

    def close(self) -> None:
        """Kill whatever the cell left in the group, then remove the group."""
        if self.group is None:
            return
        for _ in range(100):
            pids = (self.group / "cgroup.procs").read_text().split()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.01)
        with contextlib.suppress(OSError):
            self.group.rmdir()


def pids_cgroup_parents() -> list[Path]:
    """Where this process's own pids control group lives: the v1 pids hierarchy, then the v2 unified one."""
    v1, v2 = [], []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "pids" in controllers.split(","):
                v1.append(Path("/sys/fs/cgroup/pids") / path.lstrip("/"))
            elif controllers == "":
                v2.append(Path("/sys/fs/cgroup") / path.lstrip("/"))
    return v1 + v2


def user_tasks() -> int:
    """Processes and threads of this user, as the kernel counts them for RLIMIT_NPROC."""
    total, uid = 0, str(os.getuid())
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if fields["Uid"].split()[0] == uid:
                total += int(fields["Threads"])
    return total


def run_cells(sources: list[str], limits: RunnerLimits) -> dict:
    """Run the code cells in order in a fresh subprocess; report the last one's output and saved PNGs."""
    marker = f"<<lucidlm-cell-{secrets.token_hex(8)}>>"
    script = "\n".join(f"print({marker!r}, flush=True)\n{source}" for source in sources)
    memory = limits.memory_mib * 2**20

    cap = ProcessCap(limits.processes)

    def limit_child() -> None:  # runs in the child before it starts Python
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        cap.enter()

    with tempfile.TemporaryDirectory(prefix="lucidlm-cell-") as workdir:
        Path(workdir, "cell.py").write_text(script, encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "cell.py"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=limit_child,
            start_new_session=True,  # its own process group, so a kill reaches anything it started
        )
        status = "ok"
        try:
            stdout, stderr = process.communicate(timeout=limits.seconds)
        except subprocess.TimeoutExpired:
            status = "timeout"
        finally:
            with contextlib.suppress(ProcessLookupError):  # kill anything the cell left running, too
                os.killpg(process.pid, signal.SIGKILL)
            capped = cap.reached()
            cap.close()
        if status == "timeout":
            stdout, stderr = process.communicate()
            stderr += f"\nstopped: the cell ran longer than its limit of {limits.seconds:g} s".encode()
        elif process.returncode != 0:
            status = "error"
            if b"MemoryError" in stderr:
                stderr += f"\nthe cell needed more than its memory limit of {limits.memory_mib} MiB".encode()
            elif process.returncode < 0:
                stderr += f"\nthe cell was killed by signal {-process.returncode}".encode()
        if capped:
            stderr += f"\nthe cell reached its limit of {limits.processes} processes and threads".encode()
        images = [
            {"name": png.name, "data": base64.b64encode(png.read_bytes()).decode()}
            for png in sorted(Path(workdir).glob("*.png"))
        ]
    output = stdout.decode("utf-8", "replace")
    return {
        "status": status,
        "stdout": output.rsplit(marker + "\n", 1)[-1] if marker in output else "",
        "stderr": stderr.decode("utf-8", "replace").replace(str(Path(workdir, "cell.py")), "cell"),
        "images": images,
        "seconds": round(time.perf_counter() - started, 2),
    }


# --- the app --------------------------------------------------------------------------------------------------


class RunBody(BaseModel):
    cells: list[str]  # the code cells from the lesson's first down to the one to run, as edited


def create_tutorial_app(token: str, port: int, limits: RunnerLimits | None = None) -> FastAPI:
    limits = limits or RunnerLimits()
    allowed_hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    allowed_origins = {f"http://{host}" for host in allowed_hosts}
    app = FastAPI(title="lucidlm tutorial", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.headers.get("host") not in allowed_hosts:
            return error_response(403, "this tutorial answers only at 127.0.0.1 or localhost", kind="forbidden")
        origin = request.headers.get("origin")
        if origin is not None and origin not in allowed_origins:
            return error_response(403, f"requests from {origin} are refused", kind="forbidden")
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

    add_error_handlers(app)

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "tutorial.html")

    @app.get("/static/{name}")
    async def static(name: str):
        # Only files that are directly in the static folder; anything else, `..` included, is not there.
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise APIError(404, f"no such file: {name}")
        return FileResponse(path)

    @app.get("/api/lessons")
    async def lessons():
        return [{"number": lesson_number(p), "title": lesson_title(p), "file": p.name} for p in lesson_files()]

    def lesson_path(number: int) -> Path:
        try:
            return find_lesson(number)
        except LucidError as exc:
            raise APIError(404, str(exc)) from None

    @app.get("/api/lessons/{number}")
    async def lesson(number: int):
        path = lesson_path(number)
        return {"number": number, "title": lesson_title(path), "file": path.name, "cells": lesson_cells(path)}

    @app.post("/api/run")
    async def run(request: Request):
        body: RunBody = await parse_body(request, RunBody)
        if not body.cells:
            raise APIError(400, "cells must hold at least the cell to run", "cells")
        result = await asyncio.to_thread(run_cells, body.cells, limits)
        return JSONResponse(result)

    return app
