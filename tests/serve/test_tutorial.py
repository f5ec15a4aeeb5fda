"""`lucidlm tutorial`: the token, the origin and host checks, the cell runner's limits, the lesson pages."""

import base64
import re
from pathlib import Path

import httpx
import pytest

from lucidlm.lessons import find_lesson
from lucidlm.serve import BackgroundServer
from lucidlm.serve.server import bind
from lucidlm.serve.tutorial import (
    ProcessCap,
    RunnerLimits,
    create_tutorial_app,
    lesson_cells,
    markdown_to_html,
    run_cells,
)

TOKEN = "test-token-123"


@pytest.fixture(scope="module")
def tutorial():
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    app = create_tutorial_app(TOKEN, port, RunnerLimits(seconds=5, memory_mib=1024))
    with BackgroundServer(app, port=port) as url:
        yield url


def test_every_request_needs_the_token(tutorial):
    assert httpx.get(f"{tutorial}/").status_code == 403
    assert httpx.get(f"{tutorial}/?token=wrong").status_code == 403
    assert httpx.post(f"{tutorial}/api/run", json={"cells": ["print(1)"]}).status_code == 403
    page = httpx.get(f"{tutorial}/?token={TOKEN}")
    assert page.status_code == 200 and "lucidlm tutorial" in page.text
    assert page.cookies.get("lucidlm_tutorial_token") == TOKEN  # the page's own requests carry it from now on
    assert httpx.get(f"{tutorial}/api/lessons", cookies={"lucidlm_tutorial_token": TOKEN}).status_code == 200


def test_other_origins_and_hosts_are_refused(tutorial):
    headers = {"X-Tutorial-Token": TOKEN}
    evil = httpx.post(
        f"{tutorial}/api/run", json={"cells": ["print(1)"]}, headers={**headers, "Origin": "http://evil.example"}
    )
    assert evil.status_code == 403 and "http://evil.example" in evil.json()["error"]["message"]
    rebinding = httpx.get(f"{tutorial}/api/lessons", headers={**headers, "Host": "evil.example"})
    assert rebinding.status_code == 403
    same = httpx.get(f"{tutorial}/api/lessons", headers={**headers, "Origin": tutorial})
    assert same.status_code == 200


def test_static_files_cannot_escape_their_folder(tutorial):
    headers = {"X-Tutorial-Token": TOKEN}
    assert httpx.get(f"{tutorial}/static/tutorial.js", headers=headers).status_code == 200
    for path in ("/static/../tutorial.py", "/static/%2e%2e/tutorial.py", "/static/..%2Ftutorial.py", "/static/.hidden"):
        assert httpx.get(f"{tutorial}{path}", headers=headers).status_code == 404, path


def test_lessons_are_listed_and_split_into_cells(tutorial):
    headers = {"X-Tutorial-Token": TOKEN}
    lessons = httpx.get(f"{tutorial}/api/lessons", headers=headers).json()
    assert lessons[0] == {"number": 1, "title": "the dot product", "file": "01_dot_product.py"}
    lesson = httpx.get(f"{tutorial}/api/lessons/6", headers=headers).json()
    assert (
        lesson["cells"][0]["kind"] == "markdown"
        and "<h2>Lesson 6: softmax and temperature</h2>" in lesson["cells"][0]["html"]
    )
    assert lesson["cells"] == lesson_cells(find_lesson(6))
    assert httpx.get(f"{tutorial}/api/lessons/99", headers=headers).status_code == 404


def test_markdown_of_the_lessons():
    html = markdown_to_html("# Title\n\nA **bold** `x @ W` and $e^{z}$ <b>.\n\n- one\n- two\n  more\n\n## Next\ntext")
    assert html == (
        '<h2>Title</h2>\n<p>A <strong>bold</strong> <code>x @ W</code> and <span class="math">e^{z}</span> '
        "&lt;b&gt;.</p>\n<ul><li>one</li><li>two more</li></ul>\n<h3>Next</h3>\n<p>text</p>"
    )


def test_a_cell_runs_with_the_cells_above_it_and_shows_only_its_output(tutorial):
    cells = ["x = 20\nprint('first')", "print(x + 1)"]
    result = httpx.post(f"{tutorial}/api/run", json={"cells": cells}, headers={"X-Tutorial-Token": TOKEN}, timeout=60)
    assert result.json()["status"] == "ok" and result.json()["stdout"] == "21\n"


def test_a_cell_that_saves_a_png_returns_it():
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.savefig('curve.png')"
    result = run_cells([code], RunnerLimits(seconds=60))
    assert result["status"] == "ok"
    assert [image["name"] for image in result["images"]] == ["curve.png"]
    assert base64.b64decode(result["images"][0]["data"])[:8] == b"\x89PNG\r\n\x1a\n"


def test_errors_come_back_with_their_traceback():
    result = run_cells(["1 / 0"], RunnerLimits(seconds=30))
    assert result["status"] == "error" and "ZeroDivisionError" in result["stderr"]


def test_an_endless_cell_is_killed_at_its_limit_and_the_server_goes_on(tutorial):
    headers = {"X-Tutorial-Token": TOKEN}
    endless = httpx.post(
        f"{tutorial}/api/run", json={"cells": ["while True: pass"]}, headers=headers, timeout=60
    ).json()
    assert endless["status"] == "timeout" and "longer than its limit of 5 s" in endless["stderr"]
    assert 5 <= endless["seconds"] < 10
    after = httpx.post(f"{tutorial}/api/run", json={"cells": ["print('alive')"]}, headers=headers, timeout=60).json()
    assert after["stdout"] == "alive\n"


def test_a_child_process_dies_with_its_cell():
    sleeper = "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
    code = f"import subprocess, sys\n{sleeper}\nprint('started')"
    result = run_cells([code + "\nimport time\ntime.sleep(60)"], RunnerLimits(seconds=2))
    assert result["status"] == "timeout" and result["stdout"] == "started\n"
    # the sleeping child was in the cell's process group: nothing of it is left
    assert not any("time.sleep(60)" in command for command in running_commands())


FORK_BOMB = """
import os, time
children = []
try:
    for _ in range(1000):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)
except OSError as error:
    print(f"refused after {len(children)} children: {type(error).__name__}")
print(*children)
time.sleep(60)
"""


@pytest.mark.skipif(
    ProcessCap.probe().startswith("none"), reason="no process cap on this machine (root without a pids cgroup)"
)
def test_a_fork_bomb_stops_at_the_process_cap_and_leaves_nothing_behind():
    result = run_cells([FORK_BOMB], RunnerLimits(seconds=3, processes=32))
    refused, children = result["stdout"].splitlines()
    made = int(re.search(r"refused after (\d+) children: BlockingIOError", refused).group(1))
    assert 16 <= made < 32  # the cell's own threads count too
    assert result["status"] == "timeout"
    if ProcessCap.probe().startswith("a pids control group"):
        assert "reached its limit of 32 processes" in result["stderr"]
    for pid in map(int, children.split()):
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert not list(Path("/sys/fs/cgroup/pids").glob("**/lucidlm-cell-*"))  # the group was removed


def running_commands() -> list[str]:
    commands = []
    for entry in Path("/proc").iterdir():
        try:
            commands.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError):
            continue
    return commands


def test_a_memory_hog_hits_the_limit():
    result = run_cells(["x = bytearray(4 * 2**30)"], RunnerLimits(seconds=30, memory_mib=1024))
    assert result["status"] == "error" and "memory limit of 1024 MiB" in result["stderr"]
