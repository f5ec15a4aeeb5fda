"""A cell's sandbox for `lucidlm tutorial`: a cap on its processes and memory from control groups of its own
(`CellCap`), a PID namespace where the machine allows one, and `CellProcesses`, which finds and kills everything
a cell started (docs/reliability.md says what is contained and what is not)."""

from __future__ import annotations

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
import time
from pathlib import Path

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

    def refused_forks(self) -> int:
        """How many forks the cap has refused (known for the control group only)."""
        return self._counter("pids", "pids.events", "max")

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
