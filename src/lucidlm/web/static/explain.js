// The exported page: sampling and the forward pass step by step, all from gpt.js in this browser.
// window.lucidlm is the page's programming interface (the tests use it too):
//   encode(text) -> ids, decode(ids) -> text, logits(ids) -> Float32Array (the last position's),
//   generate(prompt, {maxNewTokens, temperature, topK, topP, seed}) -> {ids, text}, trace(ids) -> every
//   intermediate of one forward pass, view(ids, position) -> explain.py's view of one position, shown() -> the
//   ids and position on screen, lens(ids, top), headScores(rows, length) and ablation(ids, kind) -> lens.py's
//   logit_lens, attention_scores and ablation, and the model itself (model, KVCache).
import { GPT, KVCache, argmax, filter_logits, generate_ids, load_model, seeded_uniforms, softmax } from "./gpt.js";
import { cell, drawHeads, drawLens } from "./lensview.js";
import { load_tokenizer } from "./tokenizer.js";

const $ = (id) => document.getElementById(id);
let model = null, tokenizer = null, lessons = null;

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

// --- looking inside: lens.py in this page ------------------------------------------------------------------

const LENS_TOKENS = 64; // the lens's grid has a column a token: the text's last 64 at most, as the server's

function logSoftmaxRows(logits, T, V) {
  const out = new Float64Array(T * V);
  for (let t = 0; t < T; t++) {
    const row = logits.subarray(t * V, (t + 1) * V);
    let max = -Infinity;
    for (const v of row) if (v > max) max = v;
    let total = 0;
    for (const v of row) total += Math.exp(v - max);
    const shift = max + Math.log(total);
    for (let v = 0; v < V; v++) out[t * V + v] = row[v] - shift;
  }
  return out;
}

// logit_lens: each reading of the stream (after the embeddings, after each layer) through the final norm and
// the output matrix, with its `top` tokens (as texts) and their probabilities at every position, and its mean
// KL divergence from the output over the positions.
function logitLens(ids, top = 3) {
  const full = forwardTrace(ids), c = model.config, T = full.ids.length, V = c.vocab_size;
  const output = logSoftmaxRows(full.logits, T, V);
  const lens = { layers: ["embeddings"], tokens: full.ids.map((id) => tokenizer.decode([id])), top_tokens: [], top_probabilities: [], kl_to_output: [] };
  for (let l = 0; l < c.n_layer; l++) lens.layers.push(`layer ${l}`);
  for (const stream of full.residual) {
    const reading = logSoftmaxRows(model.unembed_forward(stream, T).logits, T, V);
    const tokens = [], probabilities = [];
    let kl = 0;
    for (let t = 0; t < T; t++) {
      const row = reading.subarray(t * V, (t + 1) * V);
      const best = topIndices(row, top);
      tokens.push(best.map((i) => tokenizer.decode([i])));
      probabilities.push(best.map((i) => Math.exp(row[i])));
      for (let v = 0; v < V; v++) kl += Math.exp(output[t * V + v]) * (output[t * V + v] - row[v]);
    }
    lens.top_tokens.push(tokens);
    lens.top_probabilities.push(probabilities);
    lens.kl_to_output.push(kl / T);
  }
  return lens;
}

// attention_scores: each head's mean attention (L, H) over `rows` (tokens, then the same `length` tokens
// again) and the repeated half's positions i, to i - 1, to i - length and to i - length + 1.
function attentionScores(rows, length) {
  const c = model.config;
  const offsets = { previous_token: 1, duplicate_token: length, induction: length - 1 };
  const scores = {};
  for (const name of Object.keys(offsets)) scores[name] = Array.from({ length: c.n_layer }, () => new Array(c.n_head).fill(0));
  for (const ids of rows) {
    const full = forwardTrace(ids), T = ids.length;
    full.layers.forEach((record, l) => {
      for (let h = 0; h < c.n_head; h++) {
        for (let i = length; i < 2 * length; i++) {
          for (const [name, offset] of Object.entries(offsets)) scores[name][l][h] += record.weights[(h * T + i) * record.S + i - offset] / (rows.length * length);
        }
      }
    });
  }
  return scores;
}

// head_scores: attentionScores on four rows of random tokens repeated once (the page's own random draws).
function headScores() {
  const c = model.config, length = Math.min(50, Math.floor(c.block_size / 2)), uniform = seeded_uniforms(0);
  const rows = Array.from({ length: 4 }, () => {
    const first = Array.from({ length }, () => Math.floor(uniform() * c.vocab_size));
    return [...first, ...first];
  });
  return { ...attentionScores(rows, length), length, batch: rows.length };
}

// ablation: the loss over `ids`, and the loss each head (L, H) and each MLP (L) adds when its output is
// replaced by zeros ("zero") or by its mean over the text's positions ("mean"), through gpt.js's hook points.
function ablation(ids, kind = "zero") {
  if (ids.length < 2) throw new Error("give a text of at least 2 tokens: the ablation scores the predictions in it");
  const c = model.config, V = c.vocab_size, HD = c.n_head * c.head_dim, inputs = ids.slice(0, -1), T = inputs.length;
  const loss = (hooks) => {
    const logp = logSoftmaxRows(model.forward(inputs, null, null, hooks), T, V);
    let total = 0;
    for (let t = 0; t < T; t++) total -= logp[t * V + ids[t + 1]];
    return total / T;
  };
  const full = forwardTrace(inputs);
  const meanOver = (values, width) => {
    const mean = new Float64Array(width);
    for (let t = 0; t < T; t++) for (let i = 0; i < width; i++) mean[i] += values[t * width + i] / T;
    return mean;
  };
  // the columns [from, from + count) of a (T, width) activation, replaced
  const replacing = (width, from, count, mean) => (values) => {
    for (let t = 0; t < T; t++) for (let i = from; i < from + count; i++) values[t * width + i] = kind === "zero" ? 0 : mean[i];
  };
  const base = loss(null);
  const heads = full.layers.map((record, l) => {
    const mean = meanOver(record.heads, HD);
    return Array.from({ length: c.n_head }, (_, h) => loss({ [`blocks.${l}.attn.hook_z`]: replacing(HD, h * c.head_dim, c.head_dim, mean) }) - base);
  });
  const mlps = full.layers.map((record, l) => loss({ [`blocks.${l}.hook_mlp_out`]: replacing(c.n_embd, 0, c.n_embd, meanOver(record.mlp, c.n_embd)) }) - base);
  return { kind, loss: base, heads, mlps };
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

// --- the numbers: from gpt.js in this page, or from the server's explain.py -------------------------------

// One position's view of a forward pass, as explain.py gives it: everything at `position`, masked scores as
// null, and one head's attention weights at every position (T x T) for the heatmap.
function atPosition(full, position, texts, { layer = 0, head = 0 } = {}) {
  const c = model.config, C = c.n_embd, H = c.n_head, D = c.head_dim, T = full.ids.length, V = c.vocab_size;
  const row = (values, width, r = position) => Array.from(values.subarray(r * width, (r + 1) * width));
  const perHead = (values, width, r) => Array.from({ length: H }, (_, h) => row(values, width, h * T + r));
  return {
    ids: full.ids, texts, position,
    token_embedding: row(full.token_embeddings, C),
    position_embedding: full.position_embeddings ? row(full.position_embeddings, C) : null,
    layers: full.layers.map((l) => ({
      ln_1: row(l.ln_1, C), q: perHead(l.q, D, position),
      scores: perHead(l.scores, T, position).map((r) => r.map((v) => (v === -Infinity ? null : v))),
      weights: perHead(l.weights, T, position),
      heads: row(l.heads, H * D), attention: row(l.attention, C), after_attention: row(l.after_attention, C),
      ln_2: row(l.ln_2, C), activations: row(l.activations, c.mlp_hidden), mlp: row(l.mlp, C),
    })),
    heatmap: { layer, head, weights: Array.from({ length: T }, (_, r) => row(full.layers[layer].weights, T, head * T + r)) },
    residual_norms: full.residual.map((x) => Math.hypot(...row(x, C))),
    lens: lensAt(full.residual.map((x) => x.subarray(position * C, (position + 1) * C))),
    ln_f: row(full.ln_f, C),
    logits: row(full.logits, V),
  };
}

// The logit lens at one position (explain.py's "lens"): the stream after the embeddings and after each layer,
// read through the final norm and the output matrix; each reading's most likely next token and its probability.
function lensAt(streams) {
  const tokens = [], probabilities = [];
  for (const stream of streams) {
    const p = softmax(model.unembed_forward(stream, 1).logits), best = argmax(p);
    tokens.push(best);
    probabilities.push(p[best]);
  }
  return { tokens, probabilities };
}

// The page's own GPT: one forward pass per text, then any position of it.
function pageSource() {
  let full = null;
  return {
    async view({ text, ids }, position, heatmap) {
      if (ids === undefined) ids = promptIds(text).slice(-model.config.block_size);
      if (!full || full.ids.join() !== ids.join()) full = forwardTrace(ids);
      const at = position < 0 ? ids.length + position : position;
      return atPosition(full, at, ids.map((id) => tokenizer.decode([id])), heatmap);
    },
    async complete(prompt, settings) {
      return generate(prompt, settings).text;
    },
    lens: async (shownView) => logitLens(shownView.ids.slice(-LENS_TOKENS)),
    heads: async (shownView) => ({ ...headScores(), ablation: ablation(shownView.ids) }),
  };
}

// `lucidlm serve`'s numbers: explain.py through /api/explain, text through /v1/completions.
function serverSource(modelId) {
  const post = async (url, body) => {
    const response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error ? answer.error.message : response.statusText);
    return answer;
  };
  return {
    view: (request, position, heatmap = {}) => post("../api/explain", { ...request, position, ...heatmap }),
    async complete(prompt, { maxNewTokens, temperature, topP, seed }) {
      const answer = await post("../v1/completions", { model: modelId, prompt, max_tokens: maxNewTokens, temperature, top_p: topP, seed });
      return answer.choices[0].text;
    },
    lens: (shownView) => post("../api/lens", { text: shownView.texts.join(""), top: 3 }),
    heads: (shownView) => post("../api/heads", { text: shownView.texts.join("") }),
  };
}

// --- the explainer -------------------------------------------------------------------------------------------

let source = null, view = null, layer = 0, head = 0;

// Text from the model's files (a token's text, the lessons' address) goes into the page as text, never as HTML:
// a tokenizer.json whose token reads `<img onerror=...>` shows those characters and runs nothing.
function escapeHTML(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function lessonLink(number, title) {
  if (!lessons) return `lesson ${number} (${title})`;
  return `<a href="${escapeHTML(lessons)}${String(number).padStart(2, "0")}.html">lesson ${number}, ${title}</a>`;
}

// One step of the forward pass: its title (which may quote a token, so it is set as text), a sentence of the
// page's own words with links to the lessons, and its pictures.
function step(title, sentence, ...pictures) {
  const box = document.createElement("div");
  box.className = "step";
  box.innerHTML = `<h3></h3><p class="hint">${sentence}</p>`;
  box.querySelector("h3").textContent = title;
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

function explain() {
  const c = config, C = c.n_embd, D = c.head_dim, p = view.position, T = view.ids.length;
  const label = (s) => `${s}: ${shown(view.texts[s])}`;
  $("steps").innerHTML = "";
  step(`Token ${p}: "${shown(view.texts[p])}" (id ${view.ids[p]})`,
    `Its row of the token embedding, ${C} numbers (${lessonLink(4, "tokens and embeddings")}).`, strip(view.token_embedding));
  if (view.position_embedding) {
    step("Position", `Added to it: position ${p}'s ${c.positions} embedding (${lessonLink(9, "positional encoding")}).`, strip(view.position_embedding));
  } else {
    step("Position", `RoPE: no vector is added; each layer rotates the queries and keys by angles that grow with the position (${lessonLink(10, "RoPE")}).`);
  }
  const record = view.layers[layer];
  const pick = document.createElement("div");
  pick.append(selector("layer", c.n_layer, layer, (v) => { layer = v; showPosition(p); }), selector("head", c.n_head, head, (v) => { head = v; showPosition(p); }));
  step(`Layer ${layer}, head ${head}`, `Choose a layer and a head; the model has ${c.n_layer} layers of ${c.n_head} heads${c.n_kv_head < c.n_head ? `, sharing ${c.n_kv_head} key/value heads` : ""}.`, pick);
  step("Normalised input", `The residual stream after ${c.norm === "rmsnorm" ? "RMSNorm" : "LayerNorm"}: every position scaled to a common size before the attention (${lessonLink(14, "norms and residuals")}).`, strip(record.ln_1));
  step("Query", `Head ${head}'s query at this position, ${D} numbers${c.qk_norm ? ", after its own RMSNorm (QK-norm)" : ""}${c.positions === "rope" ? " and the RoPE rotation" : ""} (${lessonLink(11, "attention")}).`, strip(record.q[head]));
  step("Scores, before the mask and softmax", `The query's dot product with each earlier key, divided by √${D}; later positions are masked out (−∞), so a token never sees the future (${lessonLink(12, "causal masking")}).`,
    bars(record.scores[head].slice(0, p + 1).map((v, s) => [label(s), v])));
  step("Attention weights, after the softmax", `What the head takes from each position: the scores through a softmax, summing to 1 (${lessonLink(11, "attention")}). Below: this row; right: every row of this head.`,
    bars(record.weights[head].slice(0, p + 1).map((v, s) => [label(s), v])), heatmap(view.heatmap.weights.flat(), T, T, p));
  step("Head output", `The weighted sum of the values, ${D} numbers; the heads' outputs side by side go through the output projection (${lessonLink(13, "multi-head attention")}).`, strip(record.heads.slice(head * D, (head + 1) * D)));
  step("MLP activations", `The ${c.mlp_hidden} hidden units after ${c.mlp === "swiglu" ? "SwiGLU" : c.mlp.toUpperCase()}, from the second norm of the stream (${lessonLink(15, "the transformer block")}).`, strip(record.activations));
  step("The residual stream", `Its length at this position after each layer: each block adds to the stream rather than replacing it (${lessonLink(14, "residual connections")}).`,
    bars(view.residual_norms.map((n, i) => [i === 0 ? "embeddings" : `after layer ${i - 1}`, n])));
  step("The logit lens", `Each of those streams read as if it were the last, through the final norm and the output matrix: the next token it would pick, and how sure it is. The last row is the model's own answer (${lessonLink(22, "the logit lens")}).`,
    bars(view.lens.tokens.map((t, i) => [`${i === 0 ? "embeddings" : `layer ${i - 1}`}: ${tokenText(t)}`, view.lens.probabilities[i]])));
  step("Final norm", "The stream once more normalised, then multiplied by the output matrix to give a logit for every token.", strip(view.ln_f));
  const top = topIndices(view.logits, 10);
  step("Logits", `The ten largest of ${c.vocab_size}: the model's scores for the next token.`, bars(top.map((i) => [tokenText(i), view.logits[i]])));
  const distribution = step("The next token's distribution", `The logits through temperature, top-k and top-p (the sliders above) and a softmax: what sampling draws from (${lessonLink(18, "sampling")}, ${lessonLink(6, "softmax and temperature")}).`);
  distribution.id = "distribution";
  showDistribution();
}

function topIndices(values, n) {
  return Array.from(values.keys()).sort((a, b) => values[b] - values[a]).slice(0, n);
}

// A candidate's text: the page's tokenizer, or (from the server) the id when it is not in the text.
function tokenText(id) {
  if (tokenizer) return shown(tokenizer.decode([id]));
  const at = view.ids.indexOf(id);
  return at >= 0 ? shown(view.texts[at]) : `#${id}`;
}

function sampling() {
  const topK = Number($("top-k").value);
  return { temperature: Number($("temperature").value), topK: topK || null, topP: Number($("top-p").value) };
}

function showDistribution() {
  const box = $("distribution");
  if (!box || !view) return;
  box.querySelector(".candidates")?.remove();
  const settings = sampling();
  const logits = Float64Array.from(view.logits);
  const p = settings.temperature ? softmax(filter_logits(logits, settings)) : logits.map((_, i) => (i === topIndices(logits, 1)[0] ? 1 : 0));
  box.appendChild(bars(topIndices(p, 10).map((i) => [tokenText(i), p[i]])));
}

async function showPosition(position) {
  view = await source.view({ ids: view.ids }, position, { layer, head });
  document.querySelectorAll("#tokens .token").forEach((el, j) => el.classList.toggle("selected", j === view.position));
  explain();
}

async function showText(text) {
  view = await source.view({ text }, -1, { layer, head });
  $("tokens").innerHTML = "";
  view.texts.forEach((piece, i) => {
    const span = document.createElement("span");
    span.className = "token" + (i === view.position ? " selected" : "");
    span.textContent = shown(piece);
    span.addEventListener("click", () => showPosition(i));
    $("tokens").appendChild(span);
  });
  explain();
}

// The lens view of the text on screen (the prompt's, before anything is generated).
async function showInside(draw) {
  try {
    if (!view) await showText($("prompt").value);
    await draw(view);
  } catch (error) {
    $("lens").innerHTML = "";
    cell($("lens").insertRow(), `error: ${error.message}`);
  }
}

function showSliders() {
  $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
  $("top-k-value").textContent = $("top-k").value === "0" ? "off" : $("top-k").value;
  $("top-p-value").textContent = Number($("top-p").value).toFixed(2);
  $("max-tokens-value").textContent = $("max-tokens").value;
  showDistribution();
}

let config = null;

async function start() {
  const manifest = await (await fetch("model.json")).json();
  config = manifest.config;
  let description;
  if (manifest.source === "api") {
    source = serverSource(manifest.model_id);
    description = `${manifest.model_id}: ${manifest.parameters.toLocaleString()} parameters, numbers from the server (explain.py)`;
    $("where").textContent = "The numbers come from the server, which runs the model in PyTorch (explain.py); the same page, exported with `lucidlm export --format web`, runs it in the browser.";
  } else {
    const loaded = await load_model();
    model = loaded.model;
    tokenizer = load_tokenizer(manifest.tokenizer);
    source = pageSource();
    const parameters = Object.entries(manifest.tensors).filter(([name]) => !name.startsWith("rope_") && name !== "sinusoid").reduce((n, [, t]) => n + t.shape.reduce((a, b) => a * b, 1), 0);
    description = `${parameters.toLocaleString()} parameters, run by this page`;
    window.lucidlm = {
      model, KVCache, GPT, config, tokenizer,
      encode: (text) => tokenizer.encode(text),
      decode: (ids) => tokenizer.decode(ids),
      logits: lastLogits, generate, trace: forwardTrace,
      view: (ids, position, layer = 0, head = 0) => source.view({ ids }, position, { layer, head }),
      shown: () => ({ ids: view ? view.ids : [], position: view ? view.position : null }),
      lens: logitLens, headScores: attentionScores, ablation,
    };
  }
  const c = config;
  $("model-name").textContent = `${description}: ${c.n_layer} layers, ${c.n_head} heads, width ${c.n_embd}, ${c.positions} positions, ${c.norm}, ${c.mlp}, vocabulary ${c.vocab_size}`;
  // set when the page is part of a built tutorial: a relative path of the site's (no scheme, so no javascript:)
  lessons = typeof manifest.lessons === "string" && /^[\w./-]+$/.test(manifest.lessons) ? manifest.lessons : null;
  for (const id of ["temperature", "top-k", "top-p", "max-tokens"]) $(id).addEventListener("input", showSliders);
  $("prompt").value = manifest.prompt || "";
  $("generate").addEventListener("click", async () => {
    const prompt = $("prompt").value;
    const settings = { ...sampling(), maxNewTokens: Number($("max-tokens").value), seed: Number($("seed").value) };
    const text = prompt + (await source.complete(prompt, settings));
    $("output").textContent = text;
    await showText(text);
  });
  $("refresh-lens").addEventListener("click", () => showInside(async (v) => drawLens($("lens"), await source.lens(v))));
  $("refresh-heads").addEventListener("click", () => showInside(async (v) => drawHeads($("induction"), $("ablation"), await source.heads(v))));
  showSliders();
  if ($("prompt").value) await showText($("prompt").value);
  document.body.dataset.ready = "true";
}

start().catch((error) => {
  $("model-name").textContent = `could not load the model: ${error.message}`;
  document.body.dataset.ready = "error";
});
