"""Running a lesson's cells for `lucidlm tutorial`: `run_cells` runs them in a fresh Python subprocess in the
sandbox (sandbox.py), under `RunnerLimits`, and returns the last cell's output, capped (`CappedOutput`), and the
PNGs it saved."""

from __future__ import annotations

import base64
import contextlib
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lucidlm.tutorial import sandbox


@dataclass
class RunnerLimits:
    seconds: float = 30.0
    memory_mib: int = 4096
    processes: int = 256  # processes and threads (PyTorch alone starts one thread per core)


OUTPUT_KEEP = 256 * 1024  # bytes of a cell's stdout, and of its stderr, kept at each end; the middle is cut
MAX_IMAGES, MAX_IMAGE_BYTES = 16, 4 * 2**20  # PNGs a cell may return, and the size of each


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
    cap = sandbox.CellCap(limits.processes, memory)
    watch_memory = "memory" not in cap.groups  # without a memory group, the runner sums the processes' memory
    namespace = sandbox.pid_namespace_command()

    def limit_child() -> None:  # runs in the child before it starts `unshare` or Python
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if not namespace:
            sandbox.become_subreaper()
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
            sandbox.RUNNING_CELLS.add(process.pid)
            family = sandbox.CellProcesses(process.pid, namespaced=bool(namespace))
            stdout = CappedOutput(process.stdout, marker=(marker + "\n").encode())
            stderr = CappedOutput(process.stderr)
            try:
                deadline = time.monotonic() + limits.seconds
                while process.poll() is None:
                    time.sleep(sandbox.POLL_SECONDS)
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
                sandbox.RUNNING_CELLS.discard(process.pid)
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
