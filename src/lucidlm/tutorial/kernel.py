"""`lucidlm tutorial`'s kernels: one Python process per open lesson page, which keeps the lesson's variables
from cell to cell as a Jupyter kernel does. A cell runs once, under its own time limit, and its output comes
back as it is written.

A kernel lives in the sandbox (sandbox.py) for its whole life: a PID namespace of its own where the machine
allows one, control groups that cap its processes and memory (`CellCap`), and `CellProcesses`, which finds
everything it started. A cell that runs past its time limit, or past the kernel's memory or process cap, or
that the page stops, ends the kernel and all it started; the page's next Run starts a fresh one.

The kernel's side is `serve`, run as `python -c` in the child: it reads cells as JSON lines on stdin and
answers on a pipe of its own (the channel), so nothing a cell or its subprocesses print can pose as an
answer. Python's sys.stdout and sys.stderr write to the channel, in order with the cell's end; what is
written to the file descriptors themselves (a subprocess, C code) comes through the process's pipes.

    channel messages: {"stream": "stdout" | "stderr", "text": ...}   output, as it is written
                      {"done": true | false, "images": [names]}    the cell ended (false: it raised)
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lucidlm.tutorial import sandbox

OUTPUT_KEEP = 256 * 1024  # bytes of a cell's stdout, and of its stderr, kept at each end; the middle is cut
MAX_IMAGES, MAX_IMAGE_BYTES = 16, 4 * 2**20  # PNGs a cell may return, and the size of each
LIMIT_HINT = "`lucidlm tutorial --time-limit SECONDS` raises it"
MEMORY_HINT = "`lucidlm tutorial --memory-limit MIB` raises it"
PROCESS_HINT = "`lucidlm tutorial --process-limit N` raises it"
# Cells take turns across the server (server.CellTurns), so one kernel computes at a time and may use every
# core; OpenMP's threads spin only briefly after a cell, then sleep. (OMP_WAIT_POLICY=PASSIVE, which makes them
# sleep at once, cost PyTorch's small operations 60%: docs/benchmarks.md.)
KERNEL_ENVIRONMENT = {"PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}


@dataclass
class KernelLimits:
    seconds: float = 30.0  # one cell's
    memory_mib: int = 4096  # one kernel's, its processes together
    processes: int = 256  # one kernel's processes and threads (PyTorch alone starts one thread per core)
    kernels: int = 3  # kernels kept at once; opening another ends the one used least recently


Output = Callable[[str, str], None]  # (stream, text): a cell's output as it comes


class CappedText:
    """One stream of a cell's output: the first and last `keep` bytes, with a count of what was cut between.
    `add` returns what of its text is new in the head, to show at once; the tail shows at the end."""

    def __init__(self, keep: int = OUTPUT_KEEP):
        self.keep, self.head, self.tail, self.cut = keep, bytearray(), bytearray(), 0

    def add(self, text: str) -> str:
        data = text.encode("utf-8", "surrogateescape")
        room = max(0, self.keep - len(self.head))
        shown, data = data[:room], data[room:]
        self.head += shown
        self.tail += data
        if len(self.tail) > self.keep:
            self.cut += len(self.tail) - self.keep
            del self.tail[: len(self.tail) - self.keep]
        return shown.decode("utf-8", "replace")

    def rest(self) -> str:
        """What was not shown as it came: the note of the cut, and the tail."""
        cut = f"\n[... {self.cut:,} bytes cut ...]\n" if self.cut else ""
        return cut + bytes(self.tail).decode("utf-8", "replace")

    def text(self) -> str:
        return bytes(self.head).decode("utf-8", "replace") + self.rest()


class Kernel:
    """A Python process that runs a page's cells in one namespace (see the module's docstring)."""

    def __init__(self, limits: KernelLimits):
        self.limits = limits
        self.workdir = Path(tempfile.mkdtemp(prefix="lucidlm-kernel-"))
        self.cap = sandbox.CellCap(limits.processes, limits.memory_mib * 2**20)
        self.watch_memory = "memory" not in self.cap.groups  # without a memory group, the kernel sums it
        namespace = sandbox.pid_namespace_command()
        channel_read, channel_write = os.pipe()

        def limit_child() -> None:  # runs in the child before it starts `unshare` or Python
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if not namespace:
                sandbox.become_subreaper()
            self.cap.enter()

        program = f"from lucidlm.tutorial.kernel import serve; serve({channel_write})"
        self.process = subprocess.Popen(
            [*namespace, sys.executable, "-c", program],
            cwd=self.workdir,
            env={**os.environ, **KERNEL_ENVIRONMENT},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(channel_write,),
            preexec_fn=limit_child,
            start_new_session=True,  # its own process group, so a kill reaches anything it started
        )
        os.close(channel_write)
        self.channel, self.pending = channel_read, bytearray()  # pending: read, not yet a whole line
        sandbox.RUNNING_CELLS.add(self.process.pid)
        self.family = sandbox.CellProcesses(self.process.pid, namespaced=bool(namespace))
        self.output: dict[str, CappedText] = {}  # the running cell's, by stream
        self.on_output: Output | None = None
        self.output_lock = threading.Lock()
        self.readers = [
            threading.Thread(target=self._read_pipe, args=(pipe, name), daemon=True)
            for pipe, name in ((self.process.stdout, "stdout"), (self.process.stderr, "stderr"))
        ]
        for reader in self.readers:
            reader.start()
        self.ended = ""  # why the kernel ended, once it has

    # --- output -----------------------------------------------------------------------------------------------
    def _read_pipe(self, pipe, stream: str) -> None:
        """What a cell's subprocesses and C code write to the file descriptors, with the cell's output."""
        with contextlib.suppress(OSError, ValueError):
            while chunk := os.read(pipe.fileno(), 1 << 16):
                self._output(stream, chunk.decode("utf-8", "replace"))

    def _output(self, stream: str, text: str) -> None:
        with self.output_lock:
            if stream not in self.output:
                self.output[stream] = CappedText()
            shown = self.output[stream].add(text)
            if shown and self.on_output is not None:
                self.on_output(stream, shown)

    # --- a cell -----------------------------------------------------------------------------------------------
    def run(self, code: str, on_output: Output | None = None, stop: threading.Event | None = None) -> dict:
        """Run one cell; its output goes to `on_output` as it comes (the head of each stream; the rest is in
        the result). Returns {status, stdout, stderr, stdout_rest, stderr_rest, images, seconds, ended}, status
        one of ok, error, timeout, stopped; a timeout, Stop, or a limit the kernel reached (an error with a note)
        ends the kernel."""
        if self.ended:
            raise RuntimeError(f"the kernel has ended ({self.ended})")
        started = time.perf_counter()
        with self.output_lock:
            self.output, self.on_output = {"stdout": CappedText(), "stderr": CappedText()}, on_output
        status, notes, images = "ok", [], []
        try:
            self.process.stdin.write(json.dumps({"code": code}).encode() + b"\n")
            self.process.stdin.flush()
        except OSError:
            status = "error"
        deadline, refused = time.monotonic() + self.limits.seconds, self.cap.refused_forks()
        ends_kernel = status != "ok"  # a limit, Stop, or a kernel that is gone
        while status == "ok":
            message = self._message(sandbox.POLL_SECONDS)
            if message is None:
                status = self._watch(deadline, stop, notes)
                ends_kernel = status != "ok"
            elif "stream" in message:
                self._output(message["stream"], message["text"])
            elif "done" in message:
                status = "ok" if message["done"] else "error"
                images = cell_images(self.workdir, message["images"], notes)
                break
            elif message.get("ended"):  # the kernel's process is gone
                status, ends_kernel = "error", True
        tasks = self.family.usage()[1]
        if self.cap.refused_forks() > refused or tasks > self.limits.processes:
            processes = self.limits.processes
            notes.append(f"the cell reached the kernel's limit of {processes} processes and threads ({PROCESS_HINT})")
        if ends_kernel or self.process.poll() is not None or tasks > self.limits.processes:
            self.close(status, notes)
        said = "".join(f"\n{note}" for note in notes)
        with self.output_lock:
            self.on_output = None
            if said and on_output is not None:  # the notes show at once, as the head of stderr
                on_output("stderr", said)
            stdout, stderr = self.output["stdout"], self.output["stderr"]
        return {
            "status": status,
            "stdout": stdout.text(),
            "stderr": stderr.text() + said,
            "stdout_rest": stdout.rest(),
            "stderr_rest": stderr.rest(),
            "images": images,
            "seconds": round(time.perf_counter() - started, 2),
            "ended": bool(self.ended),  # the next cell needs a fresh kernel
        }

    def _message(self, timeout: float) -> dict | None:
        """The channel's next message, or None when none came within `timeout` seconds."""
        while b"\n" not in self.pending:
            ready, _, _ = select.select([self.channel], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self.channel, 1 << 16)
            if not chunk:
                return {"ended": True}
            self.pending += chunk
        line, _, rest = bytes(self.pending).partition(b"\n")
        self.pending = bytearray(rest)
        return json.loads(line)

    def _watch(self, deadline: float, stop: threading.Event | None, notes: list[str]) -> str:
        """While a cell runs: "ok", or the status that ends it, with a note that says why."""
        resident, tasks = self.family.usage()
        if tasks > self.limits.processes:  # a process that left the pids group (root may) still counts
            return "error"
        if (resident > self.limits.memory_mib * 2**20) if self.watch_memory else self.cap.memory_exceeded():
            memory = self.limits.memory_mib
            used = f"the cell's processes together used more than the kernel's memory limit of {memory} MiB"
            notes.append(f"{used} ({MEMORY_HINT})")
            return "error"
        if stop is not None and stop.is_set():
            notes.append("stopped at the page's request")
            return "stopped"
        if time.monotonic() > deadline:
            notes.append(f"stopped: the cell ran longer than its limit of {self.limits.seconds:g} s ({LIMIT_HINT})")
            return "timeout"
        if self.process.poll() is not None:
            code = self.process.returncode
            notes.append(f"the kernel was killed by signal {-code}" if code < 0 else f"the kernel exited ({code})")
            return "error"
        return "ok"

    # --- the end ----------------------------------------------------------------------------------------------
    def close(self, why: str = "closed", notes: list[str] | None = None) -> None:
        """End the kernel and everything it started; `notes` gains what the kernel's end says of the cell."""
        if self.ended:
            return
        self.ended = why
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.family.kill()
        memory_hit = self.cap.memory_exceeded()
        self.cap.close()
        self.process.wait()
        sandbox.RUNNING_CELLS.discard(self.process.pid)
        for reader in self.readers:  # a process that escaped the kill could hold a pipe open for ever
            reader.join(timeout=1.0)
        if notes is not None and memory_hit and not any("memory" in note for note in notes):
            memory = self.limits.memory_mib
            notes.append(f"the cell needed more than the kernel's memory limit of {memory} MiB ({MEMORY_HINT})")
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            with contextlib.suppress(OSError):
                pipe.close()
        with contextlib.suppress(OSError):
            os.close(self.channel)
        shutil.rmtree(self.workdir, ignore_errors=True)


def cell_images(workdir: Path, names: list[str], notes: list[str]) -> list[dict]:
    """The PNGs a cell wrote or rewrote, up to MAX_IMAGES of at most MAX_IMAGE_BYTES each; a note says what was
    left out."""
    images, left_out = [], []
    for name in sorted(names):
        png = workdir / name
        if png.is_file() and len(images) < MAX_IMAGES and png.stat().st_size <= MAX_IMAGE_BYTES:
            images.append({"name": name, "data": base64.b64encode(png.read_bytes()).decode()})
        else:
            left_out.append(name)
    if left_out:
        notes.append(
            f"not shown: {', '.join(left_out[:5])}{' ...' if len(left_out) > 5 else ''} (at most {MAX_IMAGES} "
            f"PNGs of {MAX_IMAGE_BYTES // 2**20} MiB each)"
        )
    return images


# --- the kernel's side, in its own process ------------------------------------------------------------------


class ChannelStream(io.TextIOBase):
    """sys.stdout or sys.stderr in the kernel, line-buffered as a terminal's: a message on the channel for each
    line or flush (tqdm flushes its bar), and at the end of the cell."""

    def __init__(self, name: str, send: Callable[[dict], None]):
        self.name, self.send, self.pending = name, send, []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending.append(text)
        if "\n" in text or sum(map(len, self.pending)) > 1 << 16:
            self.flush()
        return len(text)

    def flush(self) -> None:
        text, self.pending = "".join(self.pending), []
        if text:
            self.send({"stream": self.name, "text": text})

    @property
    def encoding(self) -> str:
        return "utf-8"


def serve(channel_fd: int) -> None:
    """The kernel's loop: run each cell that comes on stdin in __main__'s namespace, answer on the channel."""
    import __main__
    from lucidlm.tutorial.cells import CellFailed, run_cell

    channel = os.fdopen(channel_fd, "w", encoding="utf-8", errors="surrogateescape")
    lock = threading.Lock()

    def send(message: dict) -> None:
        with lock:
            channel.write(json.dumps(message) + "\n")
            channel.flush()

    commands = os.fdopen(os.dup(0), "r", encoding="utf-8")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # a cell (or its subprocess) reads nothing, not the commands
    sys.stdin = open(os.devnull)  # noqa: SIM115 (the kernel's stdin, for its life)
    sys.stdout, sys.stderr = ChannelStream("stdout", send), ChannelStream("stderr", send)
    namespace = __main__.__dict__
    for number, line in enumerate(commands, start=1):
        before = figures()
        try:
            run_cell(json.loads(line)["code"], namespace, f"<cell {number}>")
            ok = True
        except CellFailed:
            ok = False
        sys.stdout.flush()
        sys.stderr.flush()
        now = figures()
        send({"done": ok, "images": [name for name, stamp in now.items() if before.get(name) != stamp]})


def figures() -> dict[str, tuple[int, int]]:
    """The PNGs in the working directory, each with (modification time, size)."""
    found = {}
    for entry in os.scandir("."):
        if entry.name.endswith(".png") and entry.is_file():
            found[entry.name] = (entry.stat().st_mtime_ns, entry.stat().st_size)
    return found
