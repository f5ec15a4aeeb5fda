// The exported page: sampling and the forward pass step by step, all from gpt.js in this browser.
// window.lucidlm is the page's programming interface (the tests use it too):
//   encode(text) -> ids, decode(ids) -> text, logits(ids) -> Float32Array (the last position's),
//   generate(prompt, {maxNewTokens, temperature, topK, topP, seed}) -> {ids, text}, trace(ids) -> every
//   intermediate of one forward pass, shown() -> the ids and position on screen, and the model (model, KVCache).
import { GPT, KVCache, filter_logits, generate_ids, load_model, softmax } from "./gpt.js";
import { load_tokenizer } from "./tokenizer.js";

const $ = (id) => document.getElementById(id);
let model = null, tokenizer = null, lessons = null, trace = null, position = 0;

// --- the programming interface --------------------------------------------------------------------------

function lastLogits(ids) {
  const logits = model.forward(ids);
  return logits.slice(logits.length - model.config.vocab_size);
}

// As encode_prompt: an empty prompt starts from a newline where the vocabulary has one, else from token 0.
function promptIds(prompt) {
  if (prompt) return tokenizer.encode(prompt);
  try {
    return tokenizer.encode("\n");
  } catch {
    return [0];
  }
}

function generate(prompt, { maxNewTokens = 100, temperature = 1, topK = null, topP = null, seed = null } = {}) {
  const ids = [...generate_ids(model, promptIds(prompt), maxNewTokens, { temperature, topK, topP, seed })];
  return { ids, text: tokenizer.decode(ids) };
}

function forwardTrace(ids) {
  const recorded = {};
  model.forward(ids.slice(-model.config.block_size), null, recorded);
  return recorded;
}

// --- pictures ------------------------------------------------------------------------------------------------

function colour(value, scale) {
  const v = Math.max(-1, Math.min(1, value / (scale || 1)));
  return v >= 0 ? `rgb(255,${Math.round(255 * (1 - v))},${Math.round(255 * (1 - v))})` : `rgb(${Math.round(255 * (1 + v))},${Math.round(255 * (1 + v))},255)`;
}

// One row of numbers as coloured cells (blue negative, red positive), with the largest magnitude in the title.
function strip(values) {
  const canvas = document.createElement("canvas");
  const cell = Math.max(1, Math.min(8, Math.floor(640 / values.length)));
  canvas.width = cell * values.length;
  canvas.height = 18;
  const scale = Math.max(...Array.from(values, Math.abs));
  const context = canvas.getContext("2d");
  values.forEach((v, i) => {
    context.fillStyle = colour(v, scale);
    context.fillRect(i * cell, 0, cell, 18);
  });
  canvas.title = `${values.length} numbers; largest magnitude ${scale.toFixed(3)}`;
  return canvas;
}

// A matrix (rows x cols, values in [0, 1]) as a heatmap; row `mark` outlined.
function heatmap(values, rows, cols, mark) {
  const canvas = document.createElement("canvas");
  const cell = Math.max(2, Math.min(16, Math.floor(320 / Math.max(rows, cols))));
  canvas.width = cols * cell;
  canvas.height = rows * cell;
  const context = canvas.getContext("2d");
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = values[r * cols + c];
      context.fillStyle = `rgba(35,57,93,${v})`;
      context.fillRect(c * cell, r * cell, cell, cell);
    }
  }
  context.strokeStyle = "#e07020";
  context.strokeRect(0.5, mark * cell + 0.5, cols * cell - 1, cell - 1);
  return canvas;
}

function bars(items) {
  const box = document.createElement("div");
  box.className = "candidates";
  const top = Math.max(...items.map(([, value]) => Math.abs(value)), 1e-12);
  for (const [label, value, text] of items) {
    const row = document.createElement("div");
    row.className = "bar-row";
    row.innerHTML = `<code></code><div class="bar"></div><span></span>`;
    row.querySelector("code").textContent = label;
    row.querySelector(".bar").style.width = `${(100 * Math.abs(value)) / top}%`;
    row.querySelector("span").textContent = text ?? value.toFixed(3);
    box.appendChild(row);
  }
  return box;
}

function shown(text) {
  return JSON.stringify(text).slice(1, -1);
}

// --- the explainer -------------------------------------------------------------------------------------------

function lessonLink(number, title) {
  if (!lessons) return `lesson ${number} (${title})`;
  return `<a href="${lessons}${String(number).padStart(2, "0")}.html">lesson ${number}, ${title}</a>`;
}

function step(title, sentence, ...pictures) {
  const box = document.createElement("div");
  box.className = "step";
  box.innerHTML = `<h3>${title}</h3><p class="hint">${sentence}</p>`;
  box.append(...pictures);
  $("steps").appendChild(box);
  return box;
}

function selector(label, count, value, onChange) {
  const select = document.createElement("select");
  for (let i = 0; i < count; i++) select.add(new Option(`${label} ${i}`, String(i)));
  select.value = String(value);
  select.addEventListener("change", () => onChange(Number(select.value)));
  return select;
}

let layer = 0, head = 0;

function rowOf(values, row, width) {
  return values.subarray(row * width, (row + 1) * width);
}

function explain() {
  const c = model.config, C = c.n_embd, T = trace.ids.length, D = c.head_dim, S = T;
  $("steps").innerHTML = "";
  const token = trace.ids[position];
  step(`Token ${position}: "${shown(tokenizer.decode([token]))}" (id ${token})`,
    `Its row of the token embedding, ${C} numbers (${lessonLink(4, "tokens and embeddings")}).`,
    strip(rowOf(trace.token_embeddings, position, C)));
  if (trace.position_embeddings) {
    step("Position", `Added to it: position ${position}'s ${c.positions} embedding (${lessonLink(9, "positional encoding")}).`,
      strip(rowOf(trace.position_embeddings, position, C)));
  } else {
    step("Position", `RoPE: no vector is added; each layer rotates the queries and keys by angles that grow with the position (${lessonLink(10, "RoPE")}).`);
  }
  const record = trace.layers[layer];
  const pick = document.createElement("div");
  pick.append(selector("layer", c.n_layer, layer, (v) => { layer = v; explain(); }),
    selector("head", c.n_head, head, (v) => { head = v; explain(); }));
  step(`Layer ${layer}, head ${head}`, `Choose a layer and a head; the model has ${c.n_layer} layers of ${c.n_head} heads${c.n_kv_head < c.n_head ? `, sharing ${c.n_kv_head} key/value heads` : ""}.`, pick);
  step("Normalised input", `The residual stream after ${c.norm === "rmsnorm" ? "RMSNorm" : "LayerNorm"}: every position scaled to a common size before the attention (${lessonLink(14, "norms and residuals")}).`,
    strip(rowOf(record.ln_1, position, C)));
  step("Query", `Head ${head}'s query at this position, ${D} numbers${c.qk_norm ? ", after its own RMSNorm (QK-norm)" : ""}${c.positions === "rope" ? " and the RoPE rotation" : ""} (${lessonLink(11, "attention")}).`,
    strip(record.q.subarray((head * T + position) * D, (head * T + position + 1) * D)));
  const scores = rowOf(record.scores, head * T + position, S);
  step("Scores, before the mask and softmax", `The query's dot product with each earlier key, divided by √${D}; later positions are masked out (−∞), so a token never sees the future (${lessonLink(12, "causal masking")}).`,
    bars(Array.from(scores.subarray(0, position + 1), (v, s) => [`${s}: ${shown(tokenizer.decode([trace.ids[s]]))}`, v])));
  const weights = rowOf(record.weights, head * T + position, S);
  step("Attention weights, after the softmax", `What the head takes from each position: the scores through a softmax, summing to 1 (${lessonLink(11, "attention")}). Left: this row; right: every row of this head.`,
    bars(Array.from(weights.subarray(0, position + 1), (v, s) => [`${s}: ${shown(tokenizer.decode([trace.ids[s]]))}`, v])),
    heatmap(record.weights.subarray(head * T * S, (head + 1) * T * S), T, S, position));
  step("Head output", `The weighted sum of the values, ${D} numbers; the heads' outputs side by side go through the output projection (${lessonLink(13, "multi-head attention")}).`,
    strip(record.heads.subarray(position * c.n_head * D + head * D, position * c.n_head * D + (head + 1) * D)));
  step("MLP activations", `The ${c.mlp_hidden} hidden units after ${c.mlp === "swiglu" ? "SwiGLU" : c.mlp.toUpperCase()}, from the second norm of the stream (${lessonLink(15, "the transformer block")}).`,
    strip(rowOf(record.activations, position, c.mlp_hidden)));
  const norms = trace.residual.map((x, i) => [i === 0 ? "embeddings" : `after layer ${i - 1}`, Math.hypot(...rowOf(x, position, C))]);
  step("The residual stream", `Its length at this position after each layer: each block adds to the stream rather than replacing it (${lessonLink(14, "residual connections")}).`, bars(norms));
  step("Final norm", "The stream once more normalised, then multiplied by the output matrix to give a logit for every token.", strip(rowOf(trace.ln_f, position, C)));
  const logits = rowOf(trace.logits, position, c.vocab_size);
  const top = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]).slice(0, 10);
  step("Logits", `The ten largest of ${c.vocab_size}: the model's scores for the next token.`, bars(top.map((i) => [shown(tokenizer.decode([i])), logits[i]])));
  const distribution = step("The next token's distribution", `The logits through temperature, top-k and top-p (the sliders above) and a softmax: what sampling draws from (${lessonLink(18, "sampling")}, ${lessonLink(6, "softmax and temperature")}).`);
  distribution.id = "distribution";
  showDistribution();
}

function sampling() {
  const topK = Number($("top-k").value);
  return { temperature: Number($("temperature").value), topK: topK || null, topP: Number($("top-p").value) };
}

function showDistribution() {
  const box = $("distribution");
  if (!box || !trace) return;
  box.querySelector(".candidates")?.remove();
  const logits = rowOf(trace.logits, position, model.config.vocab_size);
  const settings = sampling();
  const p = settings.temperature ? softmax(filter_logits(logits, settings)) : Float64Array.from(logits, (_, i) => (i === logits.indexOf(Math.max(...logits)) ? 1 : 0));
  const top = Array.from(p.keys()).sort((a, b) => p[b] - p[a]).slice(0, 10);
  box.appendChild(bars(top.map((i) => [shown(tokenizer.decode([i])), p[i]])));
}

function showTokens(ids) {
  trace = forwardTrace(ids);
  $("tokens").innerHTML = "";
  trace.ids.forEach((id, i) => {
    const span = document.createElement("span");
    span.className = "token" + (i === position ? " selected" : "");
    span.textContent = shown(tokenizer.decode([id]));
    span.addEventListener("click", () => {
      position = i;
      document.querySelectorAll("#tokens .token").forEach((el, j) => el.classList.toggle("selected", j === i));
      explain();
    });
    $("tokens").appendChild(span);
  });
  explain();
}

function showSliders() {
  $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
  $("top-k-value").textContent = $("top-k").value === "0" ? "off" : $("top-k").value;
  $("top-p-value").textContent = Number($("top-p").value).toFixed(2);
  $("max-tokens-value").textContent = $("max-tokens").value;
  showDistribution();
}

async function start() {
  const loaded = await load_model();
  model = loaded.model;
  tokenizer = load_tokenizer(loaded.manifest.tokenizer);
  window.lucidlm = {
    model, KVCache, GPT, config: model.config, tokenizer,
    encode: (text) => tokenizer.encode(text),
    decode: (ids) => tokenizer.decode(ids),
    logits: lastLogits, generate, trace: forwardTrace,
    shown: () => ({ ids: trace ? trace.ids : [], position }), // the text and position the explainer shows
  };
  lessons = (await fetch("../lessons/01.html", { method: "HEAD" }).then((r) => r.ok, () => false)) ? "../lessons/" : null;
  const c = model.config;
  const parameters = Object.entries(loaded.manifest.tensors).filter(([name]) => !name.startsWith("rope_") && name !== "sinusoid").reduce((n, [, t]) => n + t.shape.reduce((a, b) => a * b, 1), 0);
  $("model-name").textContent = `${parameters.toLocaleString()} parameters: ${c.n_layer} layers, ${c.n_head} heads, width ${c.n_embd}, ${c.positions} positions, ${c.norm}, ${c.mlp}, a ${loaded.manifest.tokenizer.kind} tokenizer of ${c.vocab_size}`;
  for (const id of ["temperature", "top-k", "top-p", "max-tokens"]) $(id).addEventListener("input", showSliders);
  $("prompt").value = loaded.manifest.prompt || "";
  $("generate").addEventListener("click", () => {
    const { ids, text } = generate($("prompt").value, { ...sampling(), maxNewTokens: Number($("max-tokens").value), seed: Number($("seed").value) });
    $("output").textContent = $("prompt").value + text;
    position = Math.min(model.config.block_size, tokenizer.encode($("prompt").value).length + ids.length) - 1;
    showTokens([...tokenizer.encode($("prompt").value), ...ids]);
  });
  showSliders();
  const first = tokenizer.encode($("prompt").value);
  position = Math.max(0, first.length - 1);
  if (first.length) showTokens(first);
  document.body.dataset.ready = "true";
}

start().catch((error) => {
  $("model-name").textContent = `could not load the model: ${error.message}`;
  document.body.dataset.ready = "error";
});
