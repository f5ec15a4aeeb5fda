// The model inspector: streams a completion from /v1/completions (with logprobs, so every token arrives
// with its probability and the top candidates), and draws attention weights from /api/attention and the lens
// view from /api/lens and /api/heads (with the exported page's drawing, lensview.js).
import { cell, drawHeads, drawLens, probabilityColour, shown } from "/explain/lensview.js";

const $ = (id) => document.getElementById(id);
let modelId = null;
let tokens = [];         // generated tokens: {text, logprob, top: [[text, logprob], ...]}
let controller = null;   // aborts the running stream
let attention = null;    // {tokens, weights[layer][head][query][key]}

async function loadModel() {
  const info = await (await fetch("/api/model")).json();
  modelId = info.id;
  $("model-name").textContent = `${info.id}: ${info.parameters.toLocaleString()} parameters`;
  const rows = [["parameters", info.parameters.toLocaleString()], ["tokenizer", info.tokenizer],
                ...Object.entries(info.config)];
  $("config").innerHTML = "";
  for (const [key, value] of rows) {
    const row = $("config").insertRow();
    row.insertCell().textContent = key;
    row.insertCell().textContent = value;
  }
  for (const [select, count] of [[$("layer"), info.config.n_layer], [$("head"), info.config.n_head]]) {
    select.innerHTML = "";
    for (let i = 0; i < count; i++) select.add(new Option(String(i), String(i)));
  }
}

function showSliders() {
  $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
  $("top-k-value").textContent = $("top-k").value === "0" ? "off" : $("top-k").value;
  $("top-p-value").textContent = Number($("top-p").value).toFixed(2);
  $("max-tokens-value").textContent = $("max-tokens").value;
}

function addToken(token) {
  const index = tokens.push(token) - 1;
  const span = document.createElement("span");
  span.className = "token";
  span.dataset.index = index;
  span.textContent = shown(token.text);
  const p = Math.exp(token.logprob);
  span.style.background = probabilityColour(p);
  span.title = `p = ${p.toFixed(3)}`;
  span.addEventListener("click", () => showCandidates(index));
  $("output").appendChild(span);
}

function showCandidates(index) {
  document.querySelectorAll(".token.selected").forEach((el) => el.classList.remove("selected"));
  document.querySelector(`.token[data-index="${index}"]`).classList.add("selected");
  const token = tokens[index];
  const box = $("candidates");
  box.innerHTML = `<h2>Candidates for token ${index + 1}</h2>`;
  for (const [text, logprob] of token.top) {
    const p = Math.exp(logprob);
    const row = document.createElement("div");
    row.className = "bar-row" + (text === token.text ? " chosen" : "");
    row.innerHTML = `<code></code><div class="bar" style="width:${(100 * p).toFixed(1)}%"></div><span>${p.toFixed(3)}</span>`;
    row.querySelector("code").textContent = JSON.stringify(text);
    box.appendChild(row);
  }
}

async function generate() {
  const prompt = $("prompt").value;
  tokens = [];
  $("output").innerHTML = "";
  $("candidates").innerHTML = "";
  const promptSpan = document.createElement("span");
  promptSpan.className = "prompt";
  promptSpan.textContent = prompt;
  $("output").appendChild(promptSpan);
  const body = {
    model: modelId, prompt, stream: true, logprobs: 5,
    max_tokens: Number($("max-tokens").value),
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
  };
  if ($("top-k").value !== "0") body.top_k = Number($("top-k").value);
  controller = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  try {
    const response = await fetch("/v1/completions", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) {
      const error = await response.json();
      throw new Error(error.error.message);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, end).replace(/^data: /, "");
        buffer = buffer.slice(end + 2);
        if (line === "[DONE]") continue;
        const logprobs = JSON.parse(line).choices[0].logprobs;
        addToken({
          text: logprobs.tokens[0], logprob: logprobs.token_logprobs[0],
          top: Object.entries(logprobs.top_logprobs[0]),
        });
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") {
      const message = document.createElement("div");
      message.className = "error";
      message.textContent = `error: ${error.message}`;
      $("output").appendChild(message);
    }
  } finally {
    $("generate").disabled = false;
    $("stop").disabled = true;
    controller = null;
  }
  await refreshAttention();
}

async function refreshAttention() {
  const text = currentText();
  if (!text) return;
  try {
    attention = await postJSON("/api/attention", {text});
  } catch {
    return;
  }
  drawHeatmap();
}

function drawHeatmap() {
  if (!attention) return;
  const weights = attention.weights[Number($("layer").value)][Number($("head").value)];
  const n = weights.length;
  const canvas = $("heatmap");
  const context = canvas.getContext("2d");
  const margin = 24;  // room for the token labels
  const cell = Math.max(1, Math.floor((canvas.width - margin) / n));
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.font = `${Math.min(12, cell)}px monospace`;
  context.textAlign = "center";
  context.textBaseline = "middle";
  for (let i = 0; i < n; i++) {
    const label = JSON.stringify(attention.tokens[i]).slice(1, -1).slice(0, 3);
    context.fillStyle = "#555";
    context.fillText(label, margin / 2, margin + (i + 0.5) * cell);  // the query tokens, down the side
    context.fillText(label, margin + (i + 0.5) * cell, margin / 2);  // the key tokens, along the top
    for (let j = 0; j <= i; j++) {
      context.fillStyle = `rgba(35, 57, 93, ${Math.sqrt(weights[i][j])})`;  // sqrt: small weights stay visible
      context.fillRect(margin + j * cell, margin + i * cell, cell, cell);
    }
  }
  canvas.dataset.drawn = String(n);
}

function currentText() {
  return $("prompt").value + tokens.map((t) => t.text).join("");
}

async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error.message);
  return answer;
}

// The logit lens: a row a reading (the embeddings, then each layer), a column a position.
async function refreshLens() {
  try {
    drawLens($("lens"), await postJSON("/api/lens", {text: currentText(), top: 3}));
  } catch (error) {
    $("lens").innerHTML = "";
    cell($("lens").insertRow(), `error: ${error.message}`);
  }
}

async function refreshHeads() {
  try {
    drawHeads($("induction"), $("ablation"), await postJSON("/api/heads", {text: currentText()}));
  } catch (error) {
    $("induction").innerHTML = "";
    cell($("induction").insertRow(), `error: ${error.message}`);
  }
}

for (const id of ["temperature", "top-k", "top-p", "max-tokens"]) $(id).addEventListener("input", showSliders);
$("refresh-lens").addEventListener("click", refreshLens);
$("refresh-heads").addEventListener("click", refreshHeads);
$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => controller && controller.abort());
$("refresh-attention").addEventListener("click", refreshAttention);
$("layer").addEventListener("change", drawHeatmap);
$("head").addEventListener("change", drawHeatmap);
showSliders();
loadModel();
