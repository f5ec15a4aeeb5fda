// The tutorial: lists the lessons, shows one as explanation and editable code side by side, and runs a
// cell (with the code cells above it, as edited) on the local machine through /api/run.
"use strict";

const $ = (id) => document.getElementById(id);

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

async function listLessons() {
  const lessons = await getJSON("/api/lessons");
  for (const lesson of lessons) {
    const link = document.createElement("a");
    link.href = `#${lesson.number}`;
    link.innerHTML = `${lesson.number}. ${lesson.title_html}`; // rendered from the lesson's markdown, escaped
    link.addEventListener("click", () => openLesson(lesson.number));
    $("lessons").appendChild(link);
  }
  const fromHash = Number(location.hash.slice(1));
  if (fromHash) openLesson(fromHash);
}

async function openLesson(number) {
  const lesson = await getJSON(`/api/lessons/${number}`);
  const article = $("lesson");
  article.innerHTML = `<h2>Lesson ${lesson.number}: ${lesson.title_html}</h2>`;
  let explanation = null;
  for (const cell of lesson.cells) {
    if (cell.kind === "markdown") {
      explanation = cell.html;
      continue;
    }
    const box = document.createElement("div");
    box.className = "cell";
    box.innerHTML = `<div class="explanation"></div><div class="code"><textarea spellcheck="false"></textarea>
      <button class="run">Run</button> <span class="status"></span><pre class="result" hidden></pre>
      <div class="images"></div></div>`;
    box.querySelector(".explanation").innerHTML = explanation || "";
    explanation = null;
    const editor = box.querySelector("textarea");
    editor.value = cell.source;
    editor.rows = Math.min(30, cell.source.split("\n").length + 1);
    box.querySelector(".run").addEventListener("click", () => runCell(box));
    article.appendChild(box);
  }
}

async function runCell(box) {
  const boxes = [...document.querySelectorAll(".cell")];
  const cells = boxes.slice(0, boxes.indexOf(box) + 1).map((b) => b.querySelector("textarea").value);
  const status = box.querySelector(".status");
  const result = box.querySelector(".result");
  const images = box.querySelector(".images");
  status.textContent = "running...";
  box.querySelector(".run").disabled = true;
  try {
    const run = await getJSON("/api/run", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({cells}),
    });
    status.textContent = `${run.status} in ${run.seconds} s`;
    result.hidden = false;
    result.classList.toggle("error", run.status !== "ok");
    // stderr is shown whatever the status: warnings, and notes such as a limit the cell reached
    result.textContent = run.stdout + run.stderr;
    images.innerHTML = "";
    for (const image of run.images) {
      const img = document.createElement("img");
      img.alt = image.name;
      img.src = `data:image/png;base64,${image.data}`;
      images.appendChild(img);
    }
  } catch (error) {
    status.textContent = `error: ${error.message}`;
  } finally {
    box.querySelector(".run").disabled = false;
  }
}

listLessons();
