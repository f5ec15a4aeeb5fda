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
import base64
import contextlib
import ctypes
import functools
import math
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel

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


@dataclass
class RunnerLimits:
    seconds: float = 30.0
    memory_mib: int = 4096
    processes: int = 256  # processes and threads (PyTorch alone starts one thread per core)


# --- running a cell -------------------------------------------------------------------------------------------

OUTPUT_KEEP = 256 * 1024  # bytes of a cell's stdout, and of its stderr, kept at each end; the middle is cut
MAX_IMAGES, MAX_IMAGE_BYTES = 16, 4 * 2**20  # PNGs a cell may return, and the size of each
POLL_SECONDS = 0.05  # how often the runner looks at a cell's processes (memory, time)


class CellCap:
    """Limits for one cell as a whole, from control groups of its own where this machine lets this user make
    them: `pids` caps its processes and threads (a fork bomb stops at the cap), `memory` caps the memory of
    all its processes together (three children of 400 MiB do not fit in 512). cgroup v1 has a hierarchy per
    controller, v2 one group with both. Without a pids group, RLIMIT_NPROC caps the processes for any user but
    root (whom the kernel exempts; the kernel counts all of this user's processes, so it is set to those
    running plus the cap). Without a memory group, the runner sums the cell's resident memory itself
    (CellProcesses). `close` kills everything still in the groups and removes them."""

    def __init__(self, processes: int, memory_bytes: int | None = None):
        self.processes, self.groups, self.nproc = processes, {}, None  # groups: controller -> directory
        for controller, limit_files, limit in (
            ("pids", ("pids.max",), processes),
            ("memory", ("memory.max", "memory.limit_in_bytes"), memory_bytes),
        ):
            group = self._make_group(controller, limit_files, limit) if limit is not None else None
            if group is not None:
                self.groups[controller] = group
        if "pids" in self.groups:
            self.how = f"a pids control group ({self.groups['pids']})"
        elif os.getuid() != 0:
            self.nproc = user_tasks() + processes
            self.how = "RLIMIT_NPROC"
        else:
            self.how = "none: running as root without a pids control group this user may create"

    @classmethod
    def probe(cls) -> str:
        """How this machine would cap a cell's processes (the same words as `how`)."""
        cap = cls(16)
        cap.close()
        return cap.how

    def _make_group(self, controller: str, limit_files: tuple[str, ...], limit: int) -> Path | None:
        for parent in cgroup_parents(controller):
            shared = next((g for g in self.groups.values() if g.parent == parent), None)  # v2: one for both
            group = shared or parent / f"{cell_group_prefix()}{secrets.token_hex(6)}"
            try:
                group.mkdir(exist_ok=shared is not None)
            except OSError:
                continue
            for name in limit_files:
                with contextlib.suppress(OSError):
                    (group / name).write_text(str(limit))
                    return group
            if shared is None:  # a directory, but not a control group with this controller
                with contextlib.suppress(OSError):
                    group.rmdir()
        return None

    def enter(self) -> None:
        """Called in the cell's process before it starts Python."""
        for group in set(self.groups.values()):
            (group / "cgroup.procs").write_text(str(os.getpid()))
        if self.nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.nproc, self.nproc))

    def _counter(self, controller: str, name: str, key: str | None = None) -> int:
        group = self.groups.get(controller)
        if group is None:
            return 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = (group / name).read_text()
            if key is None:
                return int(text.split()[-1])
            return int(dict(line.split() for line in text.splitlines()).get(key, 0))
        return 0

    def reached(self) -> bool:
        """Whether a fork was refused because of the cap (known for the control group only)."""
        return self._counter("pids", "pids.events", "max") > 0

    def memory_exceeded(self) -> bool:
        """Whether the kernel killed a process of the cell for going over the memory group's limit."""
        return any(self._counter("memory", name, "oom_kill") > 0 for name in ("memory.oom_control", "memory.events"))

    def close(self) -> None:
        for group in set(self.groups.values()):
            with contextlib.suppress(OSError):
                (group / "cgroup.kill").write_text("1")
            for _ in range(100):
                try:
                    pids = (group / "cgroup.procs").read_text().split()
                except OSError:
                    break
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                time.sleep(0.01)
            with contextlib.suppress(OSError):
                group.rmdir()
        self.groups = {}


def cell_group_prefix(server: int | None = None) -> str:
    """The start of the names of the control groups that the runner in process `server` (this one) makes."""
    return f"lucidlm-cell-{server or os.getpid()}-"


def cgroup_parents(controller: str) -> list[Path]:
    """Where this process's own control group for `controller` lives: its v1 hierarchy, then the v2 one."""
    v1, v2 = [], []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                v1.append(Path("/sys/fs/cgroup") / controller / path.lstrip("/"))
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


PR_SET_CHILD_SUBREAPER = 36
RUNNING_CELLS: set[int] = set()  # the pids of the cells running now, whichever request started them


@functools.cache
def pid_namespace_command() -> tuple[str, ...]:
    """The command that starts a cell in a PID namespace of its own, or () where this machine cannot make one.

    A namespace is what a cell cannot leave, whatever it does (`setsid`, leaving its control groups as root,
    double forks): its processes are the namespace's, and when the namespace's first process (the cell's
    Python) ends or is killed, the kernel kills every other process in it. util-linux's `unshare` makes it
    (`--kill-child`: the namespace dies with the `unshare` process too; `--mount-proc`: the cell's /proc
    shows its own processes); a user other than root makes it inside a user namespace of their own."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return ()
    command = (unshare, "--pid", "--fork", "--kill-child", "--mount-proc")
    for candidate in (command,) if os.getuid() == 0 else ((unshare, "--user", "--map-root-user", *command[1:]),):
        try:
            if subprocess.run([*candidate, "true"], capture_output=True, timeout=10).returncode == 0:
                return candidate
        except (OSError, subprocess.SubprocessError):
            pass
    return ()


def containment() -> str:
    """How a cell's processes are kept together, for the line `lucidlm tutorial` prints at start."""
    if pid_namespace_command():
        return "a PID namespace per cell (nothing it starts outlives it)"
    return (
        "no PID namespace on this machine (util-linux `unshare` is missing or not allowed): the runner finds a "
        "cell's processes by their family tree, which a cell that asks another service to start a process leaves"
    )


def become_subreaper(on: bool = True) -> bool:
    """Make this process adopt the orphans of its descendants (Linux), instead of init: a cell's process that
    left its session and outlived its parent stays where the runner can find and kill it (without a PID
    namespace)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _pid_namespace(pid: int | str, which: str = "pid") -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{which}")
    except OSError:
        return None


class CellProcesses:
    """Every process a cell started. In a PID namespace (`pid_namespace_command`) they are the processes of
    the namespace, which none can leave. Without one they are found by their parents in /proc, not by their
    session or control group (a cell can leave both: `setsid`, or as root by writing its pid to another
    group): the cell's process is a subreaper (its orphans stay its children) and so is the tutorial server
    (orphans of a cell that ended are adopted by it), so the family tree holds them all. Each process is known
    with its start time, so a reused pid is never mistaken for one of them."""

    def __init__(self, root: int, namespaced: bool):
        self.root, self.namespace = root, None
        self.namespaced = namespaced  # the root is `unshare`, whose children make up the cell's namespace
        self.known: dict[int, int] = {}  # pid -> start time (clock ticks since boot)
        table = self._table()
        self.born = table[root][1] if root in table else math.inf  # adopt nothing if it is gone already
        self.scan()

    @staticmethod
    def _table() -> dict[int, tuple[int, int, int, int]]:
        """pid -> (parent pid, start time, resident pages, threads) of every process."""
        table = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                table[int(stat.parent.name)] = (int(fields[1]), int(fields[19]), int(fields[21]), int(fields[17]))
        return table

    def scan(self) -> dict[int, tuple[int, int, int, int]]:
        """Add every process of the cell alive now to `known`; returns the process table read."""
        table = self._table()
        if self.root in table:
            self.known.setdefault(self.root, table[self.root][1])
        if self.namespaced:
            if self.namespace is None:  # `unshare` has made the namespace once its children's differs from ours
                children = _pid_namespace(self.root, "pid_for_children")
                self.namespace = children if children != _pid_namespace("self") else None
            if self.namespace is not None:
                for pid, (_, start, _, _) in table.items():
                    if pid not in self.known and _pid_namespace(pid) == self.namespace:
                        self.known[pid] = start
            return table
        for pid, (parent, start, _, _) in table.items():  # orphans this server adopted since the cell started
            if parent == os.getpid() and pid not in RUNNING_CELLS and start >= self.born:
                self.known.setdefault(pid, start)
        grew = True
        while grew:
            grew = False
            for pid, (parent, start, _, _) in table.items():
                if parent in self.known and pid not in self.known:
                    self.known[pid], grew = start, True
        return table

    def alive(self, table: dict[int, tuple[int, int, int, int]]) -> list[int]:
        return [pid for pid, start in self.known.items() if pid in table and table[pid][1] == start]

    def usage(self) -> tuple[int, int]:
        """(resident bytes, processes and threads) of the cell's processes together."""
        table = self.scan()
        alive = self.alive(table)
        return sum(table[pid][2] for pid in alive) * resource.getpagesize(), sum(table[pid][3] for pid in alive)

    def kill(self) -> None:
        """SIGKILL every one of them, again until none is left (they may fork meanwhile), and reap those this
        server adopted (without a namespace; in one, its first process reaps them as the kernel ends it)."""
        for _ in range(100):
            table = self.scan()
            living = [pid for pid in self.alive(table) if _state(pid) not in ("Z", "X")]
            if not living:
                break
            for pid in living:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        adopted = [pid for pid in self.known if pid != self.root]
        deadline = time.monotonic() + 1.0
        while adopted and time.monotonic() < deadline:
            for pid in list(adopted):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        continue
                except ChildProcessError:  # not this server's child: its own parent reaps it
                    pass
                adopted.remove(pid)
            if adopted:
                time.sleep(0.005)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


class CappedOutput:
    """What a cell writes to one pipe, read in a thread of its own as it comes: only the first and last
    `keep` bytes are kept, with a count of what was cut between them. With `marker`, everything up to the
    marker's last appearance is dropped (the output of the cells above the one that runs)."""

    def __init__(self, pipe, keep: int = OUTPUT_KEEP, marker: bytes = b""):
        self.pipe, self.keep, self.marker = pipe, keep, marker
        self.head, self.tail, self.cut = bytearray(), bytearray(), 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        window = b""  # the last bytes seen, in which a marker may have begun
        with contextlib.suppress(OSError, ValueError):
            while chunk := os.read(self.pipe.fileno(), 1 << 16):
                if self.marker:
                    joined = window + chunk
                    found = joined.rfind(self.marker)
                    window = joined[-(len(self.marker) - 1) :]
                    if found >= 0:
                        self.head, self.tail, self.cut = bytearray(), bytearray(), 0
                        chunk = joined[found + len(self.marker) :]
                self._add(chunk)

    def _add(self, data: bytes) -> None:
        room = self.keep - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > self.keep:
            self.cut += len(self.tail) - self.keep
            del self.tail[: len(self.tail) - self.keep]

    def text(self, deadline: float) -> str:
        """The output so far, waiting for the pipe's end until `deadline` (time.monotonic) at most: a process
        that escaped the kill could hold it open for ever."""
        self.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        cut = f"\n[... {self.cut:,} bytes cut ...]\n".encode() if self.cut else b""
        return bytes(self.head + cut + self.tail).decode("utf-8", "replace")


def run_cells(sources: list[str], limits: RunnerLimits, stop: threading.Event | None = None) -> dict:
    """Run the code cells in order in a fresh subprocess; report the last one's output and saved PNGs.

    Whatever the cell does, the call returns within its time limit and a second: at the limit, when its
    processes together use more than the memory limit or the process cap, or when `stop` is set (the page's
    Stop), everything it started is killed (its PID namespace, control groups, process group, family tree),
    and its pipes are read only until a deadline."""
    marker = f"<<lucidlm-cell-{secrets.token_hex(8)}>>"
    script = "\n".join(f"print({marker!r}, flush=True)\n{source}" for source in sources)
    memory = limits.memory_mib * 2**20
    cap = CellCap(limits.processes, memory)
    watch_memory = "memory" not in cap.groups  # without a memory group, the runner sums the processes' memory
    namespace = pid_namespace_command()

    def limit_child() -> None:  # runs in the child before it starts `unshare` or Python
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if not namespace:
            become_subreaper()
        cap.enter()

    status, notes, started, capped_by_count = "ok", [], time.perf_counter(), False
    try:
        with tempfile.TemporaryDirectory(prefix="lucidlm-cell-") as workdir:
            Path(workdir, "cell.py").write_text(script, encoding="utf-8")
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
            process = subprocess.Popen(
                [*namespace, sys.executable, "cell.py"],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                preexec_fn=limit_child,
                start_new_session=True,  # its own process group, so a kill reaches anything it started
            )
            RUNNING_CELLS.add(process.pid)
            family = CellProcesses(process.pid, namespaced=bool(namespace))
            stdout = CappedOutput(process.stdout, marker=(marker + "\n").encode())
            stderr = CappedOutput(process.stderr)
            try:
                deadline = time.monotonic() + limits.seconds
                while process.poll() is None:
                    time.sleep(POLL_SECONDS)
                    resident, tasks = family.usage()
                    if tasks > limits.processes:  # a cell that left its pids group (root may) still counts
                        status, capped_by_count = "error", True
                        break
                    if resident > memory if watch_memory else cap.memory_exceeded():
                        status = "error"
                        notes.append(
                            f"the cell's processes together used more than its memory limit of {limits.memory_mib} MiB"
                        )
                        break
                    if stop is not None and stop.is_set():
                        status = "stopped"
                        notes.append("stopped at the page's request")
                        break
                    if time.monotonic() > deadline:
                        status = "timeout"
                        notes.append(f"stopped: the cell ran longer than its limit of {limits.seconds:g} s")
                        break
            finally:  # kill anything the cell left running, too
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                family.kill()
                capped, memory_hit = cap.reached(), cap.memory_exceeded()
                cap.close()
                process.wait()
                RUNNING_CELLS.discard(process.pid)
            pipes_deadline = time.monotonic() + 1.0
            out, err = stdout.text(pipes_deadline), stderr.text(pipes_deadline)
            if status == "ok" and process.returncode != 0:
                status = "error"
                if memory_hit or "MemoryError" in err:  # MemoryError: a malloc the memory group refused
                    notes.append(f"the cell needed more than its memory limit of {limits.memory_mib} MiB")
                elif process.returncode < 0:
                    notes.append(f"the cell was killed by signal {-process.returncode}")
            if capped or capped_by_count:
                notes.append(f"the cell reached its limit of {limits.processes} processes and threads")
            images = cell_images(Path(workdir), notes)
            err = err.replace(str(Path(workdir, "cell.py")), "cell")
    finally:
        cap.close()
    return {
        "status": status,
        "stdout": out,
        "stderr": err + "".join(f"\n{note}" for note in notes),
        "images": images,
        "seconds": round(time.perf_counter() - started, 2),
    }


def cell_images(workdir: Path, notes: list[str]) -> list[dict]:
    """The PNGs a cell saved, up to MAX_IMAGES of at most MAX_IMAGE_BYTES each; a note says what was left out."""
    images, left_out = [], []
    for png in sorted(workdir.glob("*.png")):
        if png.is_file() and len(images) < MAX_IMAGES and png.stat().st_size <= MAX_IMAGE_BYTES:
            images.append({"name": png.name, "data": base64.b64encode(png.read_bytes()).decode()})
        else:
            left_out.append(png.name)
    if left_out:
        notes.append(
            f"not shown: {', '.join(left_out[:5])}{' ...' if len(left_out) > 5 else ''} (at most {MAX_IMAGES} "
            f"PNGs of {MAX_IMAGE_BYTES // 2**20} MiB each)"
        )
    return images


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
        adopting = not pid_namespace_command() and become_subreaper()  # orphans of a cell come to this server
        yield
        if adopting:
            become_subreaper(False)

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
