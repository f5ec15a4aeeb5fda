// A lesson page, live: each code cell is editable and runs as in a notebook, the cells' variables kept from run
// to run. Where it runs is the page's runner: the Python in this page in a built site (runtime/python.js), or
// this machine under `lucidlm tutorial` (server-python.js); both have run(code), stop() and started. Running a
// cell first runs the cells above it that have not run. Under each cell, what it printed (a built site's
// build-time output until then) and its claims: each `assert` of the cell, held, failed, or not reached; a
// failed cell marks the line where it failed, and the cells below that were to run say they did not. The bar
// ends with what happened: how many cells ran and for how long, or which cell failed and where.
//
// A cell with an exercise holds the stub of a function the learner writes (the site cut the solution out):
// Check runs lucidlm.exercises' check on the cell's code in the same Python and lists each case, passed or
// failed and why; Hint shows the hints one at a time, and Solution shows the lesson's own once a check has
// seen an attempt. What passed is kept in this browser (the index shows it too), and survives Reset.
//
// The capstone (lesson 28) builds its GPT from the learner's functions: before its cells run, the page hands
// the Python every lesson's cells as edited in this browser (lucidlm.exercises.capstone.PAGE_SOURCES).
//
// window.course is the page's interface for scripts and tests: runAll(), stop(), reset(), the cells (each
// with source() and setSource(text), what its editor holds) and check(key).
import {
  Decoration, EditorView, StateEffect, StateField, basicSetup, keymap, python as pythonSyntax,
} from "./editor/codemirror.js";

const article = document.querySelector("article.lesson");
const bar = document.querySelector(".course-bar");
const status = bar.querySelector(".python-status");
const python = article.dataset.runner === "server"
  ? new (await import("./server-python.js")).ServerPython("/api/run")
  : new (await import("./runtime/python.js")).BrowserPython(new URL("runtime/", import.meta.url));
const storageKey = (index) => `lucidlm:lesson:${article.dataset.lesson}:cell:${index}`;
const PROGRESS = "lucidlm:exercises"; // {key: {attempted, passed}}, for every lesson of this site
const REPORT = "lucidlm-exercise-report:"; // the line of a check's output that carries its report
let ran = new Set(); // the cells this interpreter has run
let busy = false;

// The lines of a cell that assert something: the claims it checks, by line number (1 is the first).
function claimsOf(source) {
  return source.split("\n").flatMap((line, i) => (/^\s*assert\b/.test(line) ? [{ line: i + 1, text: line.trim() }] : []));
}

// Where a traceback says the cell stopped: the last line it names in the cell's own code. The traceback
// starts at the cell (tutorial/cells.py), so the cell's own file is the first one it names: "<cell N>".
function failedLine(stderr) {
  const frames = [...stderr.matchAll(/File "(<cell \d+>)", line (\d+)/g)];
  const own = frames.filter((frame) => frame[1] === frames[0]?.[1]);
  return own.length ? Number(own[own.length - 1][2]) : null;
}

// The failed line's mark in the editor: set with a line number, cleared with null (and by any edit).
const markFailedLine = StateEffect.define();
const failedLineField = StateField.define({
  create: () => Decoration.none,
  update(marks, transaction) {
    if (transaction.docChanged) return Decoration.none;
    for (const effect of transaction.effects) {
      if (!effect.is(markFailedLine)) continue;
      if (effect.value === null || effect.value > transaction.state.doc.lines) return Decoration.none;
      const line = transaction.state.doc.line(effect.value);
      return Decoration.set([Decoration.line({ class: "failed-line" }).range(line.from)]);
    }
    return marks;
  },
  provide: (field) => EditorView.decorations.from(field),
});

const cells = [...article.querySelectorAll(".code-cell")].map((element, index) => {
  const original = element.querySelector("pre.code").textContent;
  const editor = new EditorView({
    doc: localStorage.getItem(storageKey(index)) ?? original,
    extensions: [
      keymap.of([{ key: "Mod-Enter", run: () => (runUpTo(index), true) }]), // before basicSetup's keys
      basicSetup,
      pythonSyntax(),
      failedLineField,
      EditorView.updateListener.of((update) => {
        if (update.docChanged) localStorage.setItem(storageKey(index), update.state.doc.toString());
      }),
    ],
  });
  const run = document.createElement("button");
  run.className = "run";
  run.textContent = "Run";
  run.addEventListener("click", () => runUpTo(index));
  const live = document.createElement("div");
  live.className = "live";
  const claims = document.createElement("ul");
  claims.className = "claims";
  element.querySelector("pre.code").replaceWith(editor.dom);
  element.insertBefore(run, editor.dom.nextSibling);
  element.append(live, claims);
  const cell = {
    element, original, live, claims, built: element.querySelector(".built"),
    source: () => editor.state.doc.toString(),
    markLine: (line) => editor.dispatch({ effects: markFailedLine.of(line) }),
    setSource: (text) => editor.dispatch({ changes: { from: 0, to: editor.state.doc.length, insert: text } }),
  };
  cell.exercises = [...element.querySelectorAll(".exercise")].map((exercise) => exerciseBar(cell, exercise));
  return cell;
});

function progress() {
  return JSON.parse(localStorage.getItem(PROGRESS) || "{}");
}

function remember(key, report) {
  const all = progress();
  const before = all[key] ?? { attempted: false, passed: false };
  all[key] = { attempted: before.attempted || report.written, passed: before.passed || report.passed };
  localStorage.setItem(PROGRESS, JSON.stringify(all));
}

// An exercise's bar under its cell: Check, Hint and Solution, the mark of its progress and the last report.
function exerciseBar(cell, element) {
  const key = element.dataset.key;
  const hints = [...element.querySelectorAll("template.hint")].map((t) => t.content.textContent);
  const solution = element.querySelector("template.solution").content.textContent;
  const buttons = Object.fromEntries(["check", "hint", "solution"].map((name) => {
    const button = document.createElement("button");
    button.className = name;
    button.textContent = name[0].toUpperCase() + name.slice(1);
    element.appendChild(button);
    return [name, button];
  }));
  const mark = document.createElement("span");
  mark.className = "exercise-mark";
  const shown = document.createElement("div");
  shown.className = "exercise-help";
  const report = document.createElement("ul");
  report.className = "exercise-report";
  element.append(mark, shown, report);
  let hintsShown = 0;
  const update = () => {
    const state = progress()[key] ?? {};
    mark.textContent = state.passed ? "✓ passed" : state.attempted ? "not yet" : "to write";
    mark.dataset.state = state.passed ? "passed" : state.attempted ? "attempted" : "new";
    buttons.solution.disabled = !state.attempted;
    buttons.solution.title = state.attempted ? "" : "after your first Check";
  };
  buttons.hint.addEventListener("click", () => {
    if (hintsShown >= hints.length) return;
    const item = document.createElement("p");
    item.className = "hint";
    item.textContent = `${hintsShown === 0 ? "Hint" : "The idea"}: ${hints[hintsShown++]}`;
    shown.appendChild(item);
    buttons.hint.disabled = hintsShown >= hints.length;
  });
  buttons.solution.addEventListener("click", () => {
    if (shown.querySelector("pre.solution")) return;
    const code = document.createElement("pre");
    code.className = "solution";
    code.textContent = solution;
    shown.appendChild(code);
  });
  const check = async () => {
    if (busy) return null;
    setBusy(true);
    status.textContent = `Checking ${key}…`;
    try {
      let printed = "";
      const others = cells.filter((other) => other !== cell).map((other) => other.source());
      const code = `from lucidlm.exercises.catalog import print_report\nprint_report(${JSON.stringify(key)}, ` +
        `${JSON.stringify(cell.source())}, ${JSON.stringify(others)}, ${JSON.stringify(REPORT)})`;
      const started = performance.now();
      const result = await python.run(code, (stream, text) => { if (stream === "stdout") printed += text; });
      const line = printed.split("\n").find((text) => text.startsWith(REPORT));
      if (!result.ok || !line) throw new Error(result.stopped ? `the check stopped: ${result.stopped}` : "the check did not run");
      const outcome = JSON.parse(line.slice(REPORT.length));
      outcome.seconds = (performance.now() - started) / 1000;
      showReport(report, outcome);
      remember(key, outcome);
      update();
      status.textContent = outcome.passed
        ? `${key} passed every case (${outcome.cases.length}).`
        : `${key}: ${outcome.cases.filter((c) => !c.passed).length} of ${outcome.cases.length} cases failed.`;
      return outcome;
    } catch (error) {
      status.textContent = error.message;
      return null;
    } finally {
      setBusy(false);
    }
  };
  buttons.check.addEventListener("click", check);
  update();
  return { key, check, clear: () => { report.innerHTML = ""; shown.innerHTML = ""; hintsShown = 0; buttons.hint.disabled = false; } };
}

function showReport(list, outcome) {
  list.innerHTML = "";
  for (const result of outcome.cases) {
    const item = document.createElement("li");
    item.className = result.passed ? "held" : "failed";
    item.textContent = `${result.passed ? "✓" : "✗"} ${result.case}${result.message ? `: ${result.message}` : ""}`;
    list.appendChild(item);
  }
}

function showClaims(cell, outcome) {
  cell.claims.innerHTML = "";
  const failed = outcome && !outcome.ok ? outcome.line : null;
  for (const claim of claimsOf(cell.source())) {
    const item = document.createElement("li");
    let state = "unchecked";
    if (outcome?.ok) state = "held";
    else if (outcome && failed !== null) state = claim.line < failed ? "held" : claim.line === failed && outcome.assertion ? "failed" : "not reached";
    else if (outcome) state = "not reached";
    item.className = state.replace(" ", "-");
    item.textContent = `${{ held: "✓", failed: "✗", "not reached": "…", unchecked: "·" }[state]} ${claim.text}`;
    item.title = state;
    cell.claims.appendChild(item);
  }
}

async function runCell(cell) {
  cell.element.dataset.state = "running";
  cell.live.innerHTML = "";
  if (cell.built) cell.built.hidden = true; // the build-time output, back on Reset
  const output = { stdout: document.createElement("pre"), stderr: document.createElement("pre") };
  output.stdout.className = "result";
  output.stderr.className = "result error";
  let stderr = "";
  const started = performance.now();
  const result = await python.run(cell.source(), (stream, text) => {
    if (stream === "stderr") stderr += text;
    output[stream].textContent += text;
    if (!output[stream].isConnected) cell.live.appendChild(output[stream]);
  });
  for (const image of result.images) {
    const img = document.createElement("img");
    img.src = image.url;
    img.alt = `${image.name}, drawn by the code above`;
    cell.live.appendChild(img);
  }
  if (result.stopped) {
    const note = document.createElement("pre");
    note.className = "result error";
    note.textContent = `${result.stopped}: the interpreter was ended, and the next Run starts a fresh one`;
    cell.live.appendChild(note);
  }
  const line = result.ok || result.stopped ? null : failedLine(stderr);
  const outcome = { ok: result.ok, line, assertion: /\nAssertionError\b/.test(`\n${stderr}`) };
  showClaims(cell, result.stopped ? null : outcome);
  cell.element.dataset.state = result.stopped ? "stopped" : result.ok ? "ok" : "error";
  const seconds = (performance.now() - started) / 1000;
  cell.element.dataset.seconds = seconds.toFixed(2);
  cell.markLine(line);
  return { ...result, line, seconds };
}

// A cell that was to run after one that failed: it says so, above its build-time output.
function markSkipped(cell, failedNumber) {
  cell.element.dataset.state = "skipped";
  cell.live.innerHTML = "";
  const note = document.createElement("p");
  note.className = "skipped";
  note.textContent = `Not run: cell ${failedNumber} above failed, and this cell builds on it.`;
  cell.live.appendChild(note);
  if (cell.built) cell.built.hidden = false;
}

function setBusy(value) {
  busy = value;
  document.body.dataset.running = String(value);
  bar.querySelector(".stop").disabled = !value;
}

// Every lesson's code cells as the learner has them in this browser: as given (the page holds them, stubs in
// place), with each cell edited here in its place. {lesson: [cell sources, in order]}.
function editedLessons() {
  const lessons = JSON.parse(document.getElementById("lessons-as-given").textContent);
  for (let i = 0; i < localStorage.length; i++) {
    const match = /^lucidlm:lesson:(\d+):cell:(\d+)$/.exec(localStorage.key(i));
    if (match && lessons[match[1]]) lessons[match[1]][Number(match[2])] = localStorage.getItem(localStorage.key(i));
  }
  return lessons;
}

// Runs the cells up to `last`: those above it that this interpreter has not run (every one, with `all`), then
// the cell itself.
async function runUpTo(last, all = false) {
  if (busy) return;
  setBusy(true);
  if (!python.started) status.textContent = "starting…";
  try {
    if (article.dataset.capstone) {
      const handed = await python.run("import lucidlm.exercises.capstone as _capstone\n" +
        `_capstone.PAGE_SOURCES = ${JSON.stringify(editedLessons())}`);
      if (!handed.ok) throw new Error("the page could not hand your lessons to the Python");
    }
    let count = 0, seconds = 0;
    let summary = "";
    for (let index = 0; index <= last; index++) {
      if (index < last && ran.has(index) && !all) continue;
      status.textContent = `Running cell ${index + 1} of ${cells.length}…`;
      const { ok, stopped, ended, line, seconds: took } = await runCell(cells[index]);
      count += 1;
      seconds += took;
      if (stopped || ended) ran = new Set(); // a fresh interpreter next time
      else ran.add(index);
      if (stopped) {
        summary = `Cell ${index + 1} stopped: ${stopped}. The next Run starts afresh.`;
        break;
      }
      if (!ok) {
        summary = `Cell ${index + 1} failed${line ? ` at line ${line}` : ""}` +
          (ended ? "; its Python was ended, and the next Run starts afresh." : ".");
        for (let below = index + 1; below <= last; below++) markSkipped(cells[below], index + 1);
        break; // the cells below build on this one
      }
    }
    status.textContent = summary ||
      `${count} cell${count === 1 ? "" : "s"} ran in ${seconds.toFixed(1)} s; the cells share their variables, as in a notebook.`;
  } catch (error) {
    status.textContent = error.message;
    ran = new Set();
  } finally {
    setBusy(false);
  }
}

function stop() {
  python.stop("stopped");
  ran = new Set();
  status.textContent = "Stopped. The next Run starts afresh.";
}

function reset() {
  python.stop("reset");
  ran = new Set();
  cells.forEach((cell, index) => {
    cell.setSource(cell.original);
    localStorage.removeItem(storageKey(index));
    cell.live.innerHTML = "";
    if (cell.built) cell.built.hidden = false;
    delete cell.element.dataset.state;
    cell.markLine(null);
    showClaims(cell, null);
    cell.exercises.forEach((exercise) => exercise.clear());
  });
  status.textContent = "Reset: the lesson as written, run afresh on the next Run.";
}

const runAll = () => runUpTo(cells.length - 1, true);
bar.querySelector(".run-all").addEventListener("click", runAll);
bar.querySelector(".stop").addEventListener("click", stop);
bar.querySelector(".reset").addEventListener("click", reset);
cells.forEach((cell) => showClaims(cell, null));
const exercises = Object.fromEntries(cells.flatMap((cell) => cell.exercises.map((e) => [e.key, e])));
window.course = { cells, python, runAll, stop, reset, check: (key) => exercises[key].check() };
document.body.dataset.course = "ready";
