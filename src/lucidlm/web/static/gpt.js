// The GPT in plain JavaScript: a twin of src/lucidlm/model/gpt.py, held to its logits by tests/web.
//
// Same names as the PyTorch model: the weights are `state_for_saving`'s tensors (transformer.wte.weight,
// transformer.h.0.attn.c_attn.weight, ...), plus the position tables the model computes from its config
// (rope_cos, rope_sin, sinusoid). Every layer is a *_forward function over Float32Arrays in row-major order.
// Shapes in comments: T tokens in this call, S = past + T positions attended to, C channels, H query heads,
// K key/value heads, D head size, V vocabulary.
"use strict";

// --- layers ------------------------------------------------------------------------------------------------

// y = x W^T + b for every row of x. x: (T, IN), W: (OUT, IN) as nn.Linear stores it, b: (OUT) or null.
function linear_forward(x, T, weight, bias, IN, OUT) {
  const y = new Float32Array(T * OUT);
  for (let t = 0; t < T; t++) {
    const row = t * IN;
    for (let o = 0; o < OUT; o++) {
      let sum = bias ? bias[o] : 0;
      const w = o * IN;
      for (let i = 0; i < IN; i++) sum += x[row + i] * weight[w + i];
      y[t * OUT + o] = sum;
    }
  }
  return y;
}

// LayerNorm over each row of width C: (x - mean) / sqrt(variance + eps) * weight + bias.
function layernorm_forward(x, T, C, weight, bias, eps) {
  const y = new Float32Array(T * C);
  for (let t = 0; t < T; t++) {
    const row = t * C;
    let mean = 0;
    for (let i = 0; i < C; i++) mean += x[row + i];
    mean /= C;
    let variance = 0;
    for (let i = 0; i < C; i++) variance += (x[row + i] - mean) ** 2;
    const inverse = 1 / Math.sqrt(variance / C + eps);
    for (let i = 0; i < C; i++) y[row + i] = (x[row + i] - mean) * inverse * weight[i] + (bias ? bias[i] : 0);
  }
  return y;
}

// RMSNorm over each row of width C: x / sqrt(mean(x^2) + eps) * weight.
function rmsnorm_forward(x, T, C, weight, eps) {
  const y = new Float32Array(T * C);
  for (let t = 0; t < T; t++) {
    const row = t * C;
    let squares = 0;
    for (let i = 0; i < C; i++) squares += x[row + i] * x[row + i];
    const inverse = 1 / Math.sqrt(squares / C + eps);
    for (let i = 0; i < C; i++) y[row + i] = x[row + i] * inverse * weight[i];
  }
  return y;
}

// Rotate each pair (x_i, x_{i+D/2}) of one head's vector by its position's angle, in place (see apply_rope):
// x_i cos a - x_{i+D/2} sin a, and x_{i+D/2} cos a + x_i sin a; `sin`'s first half carries the minus sign.
function rope_forward(x, offset, D, cos, sin, position) {
  const half = D / 2;
  const rotated = new Float32Array(D);
  for (let i = 0; i < D; i++) {
    const partner = x[offset + ((i + half) % D)];
    rotated[i] = x[offset + i] * cos[position * D + i] + partner * sin[position * D + i];
  }
  x.set(rotated, offset);
}

const GELU_SCALE = Math.sqrt(2 / Math.PI);

function gelu_tanh(x) {
  return 0.5 * x * (1 + Math.tanh(GELU_SCALE * (x + 0.044715 * x * x * x)));
}

function silu(x) {
  return x / (1 + Math.exp(-x));
}

// The MLP's activation: (T, hidden) from c_fc's (T, hidden), or from its (T, 2 * hidden) for SwiGLU (gate, value).
function activation_forward(h, T, hidden, kind) {
  if (kind === "swiglu") {
    const y = new Float32Array(T * hidden);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < hidden; i++) y[t * hidden + i] = silu(h[t * 2 * hidden + i]) * h[t * 2 * hidden + hidden + i];
    }
    return y;
  }
  const f = { gelu: gelu_tanh, relu: (v) => Math.max(v, 0), relu2: (v) => Math.max(v, 0) ** 2 }[kind];
  return h.map(f);
}

// --- the KV cache --------------------------------------------------------------------------------------------

// Keys and values of every layer for up to block_size positions: (K, block_size, D) per layer.
class KVCache {
  constructor(config) {
    const size = config.n_kv_head * config.block_size * config.head_dim;
    this.keys = Array.from({ length: config.n_layer }, () => new Float32Array(size));
    this.values = Array.from({ length: config.n_layer }, () => new Float32Array(size));
    this.length = 0;
  }
  reset() {
    this.length = 0;
  }
}

// --- the model -----------------------------------------------------------------------------------------------

class GPT {
  // `config`: GPTConfig's fields; `tensors`: {name: Float32Array}.
  constructor(config, tensors) {
    this.config = config;
    this.tensors = tensors;
  }

  weight(name) {
    const tensor = this.tensors[name];
    if (tensor === undefined) throw new Error(`the weights lack ${name}`);
    return tensor;
  }

  optional(name) {
    return this.tensors[name] || null;
  }

  norm_forward(x, T, prefix) {
    const c = this.config;
    if (c.norm === "rmsnorm") return rmsnorm_forward(x, T, c.n_embd, this.weight(`${prefix}.weight`), c.norm_eps);
    return layernorm_forward(x, T, c.n_embd, this.weight(`${prefix}.weight`), this.optional(`${prefix}.bias`), c.norm_eps);
  }

  // Causal self-attention of T new positions over the cache's past ones (or none), adding this call's keys and
  // values to the cache. Returns (T, C); `record` (or null) receives the heads' scores and weights.
  attention_forward(x, T, layer, positions, cache, record, hooks) {
    const c = this.config;
    const H = c.n_head, K = c.n_kv_head, D = c.head_dim, C = c.n_embd;
    const p = `transformer.h.${layer}.attn`;
    const width = (H + 2 * K) * D;
    const qkv = linear_forward(x, T, this.weight(`${p}.c_attn.weight`), this.optional(`${p}.c_attn.bias`), C, width);
    const past = cache.length;
    const S = past + T;
    const q = new Float32Array(H * T * D); // (H, T, D)
    const keys = cache.keys[layer], values = cache.values[layer]; // (K, block_size, D)
    const stride = c.block_size * D;
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) q.set(qkv.subarray(t * width + h * D, t * width + (h + 1) * D), (h * T + t) * D);
      for (let k = 0; k < K; k++) {
        const from = t * width + (H + k) * D;
        keys.set(qkv.subarray(from, from + D), k * stride + (past + t) * D);
        values.set(qkv.subarray(from + K * D, from + K * D + D), k * stride + (past + t) * D);
      }
    }
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) this.position_forward(q, (h * T + t) * D, p + ".q_norm", positions[t]);
      for (let k = 0; k < K; k++) this.position_forward(keys, k * stride + (past + t) * D, p + ".k_norm", positions[t]);
    }
    const y = new Float32Array(T * H * D); // heads side by side: (T, H * D)
    const scale = 1 / Math.sqrt(D);
    const scoresOut = record ? new Float32Array(H * T * S) : null;
    const weightsOut = record ? new Float32Array(H * T * S) : null;
    for (let h = 0; h < H; h++) {
      const k = Math.floor(h / (H / K)); // grouped-query heads share their key/value head
      for (let t = 0; t < T; t++) {
        const visible = past + t + 1; // the causal mask: position past + t sees itself and what came before
        const scores = new Float64Array(visible);
        let max = -Infinity;
        for (let s = 0; s < visible; s++) {
          let dot = 0;
          for (let i = 0; i < D; i++) dot += q[(h * T + t) * D + i] * keys[k * stride + s * D + i];
          scores[s] = dot * scale;
          if (scores[s] > max) max = scores[s];
        }
        let total = 0;
        const weights = scores.map((score) => {
          const e = Math.exp(score - max);
          total += e;
          return e;
        });
        for (let s = 0; s < visible; s++) weights[s] /= total;
        for (let i = 0; i < D; i++) {
          let sum = 0;
          for (let s = 0; s < visible; s++) sum += weights[s] * values[k * stride + s * D + i];
          y[t * H * D + h * D + i] = sum;
        }
        if (record) {
          for (let s = 0; s < S; s++) {
            scoresOut[(h * T + t) * S + s] = s < visible ? scores[s] : -Infinity;
            weightsOut[(h * T + t) * S + s] = s < visible ? weights[s] : 0;
          }
        }
      }
    }
    if (record) Object.assign(record, { q, scores: scoresOut, weights: weightsOut, heads: y, S });
    hooks?.[`blocks.${layer}.attn.hook_z`]?.(y, T);
    return linear_forward(y, T, this.weight(`${p}.c_proj.weight`), this.optional(`${p}.c_proj.bias`), H * D, C);
  }

  // QK-norm (an RMSNorm over one head's vector), then the rotation of RoPE positions, in place.
  position_forward(x, offset, normName, position) {
    const c = this.config, D = c.head_dim;
    if (c.qk_norm) x.set(rmsnorm_forward(x.subarray(offset, offset + D), 1, D, this.weight(`${normName}.weight`), c.norm_eps), offset);
    if (c.positions === "rope") rope_forward(x, offset, D, this.weight("rope_cos"), this.weight("rope_sin"), position);
  }

  mlp_forward(x, T, layer, record) {
    const c = this.config, p = `transformer.h.${layer}.mlp`;
    const width = c.mlp === "swiglu" ? 2 * c.mlp_hidden : c.mlp_hidden;
    const h = linear_forward(x, T, this.weight(`${p}.c_fc.weight`), this.optional(`${p}.c_fc.bias`), c.n_embd, width);
    const a = activation_forward(h, T, c.mlp_hidden, c.mlp);
    if (record) record.activations = a;
    return linear_forward(a, T, this.weight(`${p}.c_proj.weight`), this.optional(`${p}.c_proj.bias`), c.mlp_hidden, c.n_embd);
  }

  // Logits (T, V) for `ids`, continuing `cache` (a fresh one when null). With `trace` (an object), every
  // intermediate is recorded in it for the explainer: embeddings, each layer's norms, queries, scores,
  // weights, head outputs, MLP activations and residual stream, the final norm and the logits. `hooks` maps
  // a hook point's name (model/hooks.py's; here only `blocks.{l}.attn.hook_z`, the heads' outputs side by
  // side (T, H * D), and `blocks.{l}.hook_mlp_out`, (T, C)) to a function that may change it in place.
  forward(ids, cache = null, trace = null, hooks = null) {
    const c = this.config, C = c.n_embd, T = ids.length;
    cache = cache || new KVCache(c);
    if (cache.length + T > c.block_size) throw new Error(`${cache.length + T} tokens is longer than block_size=${c.block_size}`);
    const positions = Array.from({ length: T }, (_, t) => cache.length + t);
    const wte = this.weight("transformer.wte.weight");
    let x = new Float32Array(T * C);
    for (let t = 0; t < T; t++) x.set(wte.subarray(ids[t] * C, (ids[t] + 1) * C), t * C);
    if (trace) trace.token_embeddings = x.slice();
    const table = c.positions === "learned" ? this.weight("transformer.wpe.weight") : c.positions === "sinusoidal" ? this.weight("sinusoid") : null;
    if (table) {
      for (let t = 0; t < T; t++) for (let i = 0; i < C; i++) x[t * C + i] += table[positions[t] * C + i];
      if (trace) trace.position_embeddings = Float32Array.from(positions.flatMap((pos) => Array.from(table.subarray(pos * C, (pos + 1) * C))));
    }
    if (trace) Object.assign(trace, { ids: ids.slice(), positions, past: cache.length, layers: [], residual: [x.slice()] });
    for (let layer = 0; layer < c.n_layer; layer++) {
      const record = trace ? {} : null;
      const ln1 = this.norm_forward(x, T, `transformer.h.${layer}.ln_1`);
      const attended = this.attention_forward(ln1, T, layer, positions, cache, record, hooks);
      for (let i = 0; i < x.length; i++) x[i] += attended[i];
      const afterAttention = trace ? x.slice() : null;
      const ln2 = this.norm_forward(x, T, `transformer.h.${layer}.ln_2`);
      const mlp = this.mlp_forward(ln2, T, layer, record);
      hooks?.[`blocks.${layer}.hook_mlp_out`]?.(mlp, T);
      for (let i = 0; i < x.length; i++) x[i] += mlp[i];
      if (trace) {
        Object.assign(record, { ln_1: ln1, attention: attended, after_attention: afterAttention, ln_2: ln2, mlp });
        trace.layers.push(record);
        trace.residual.push(x.slice());
      }
    }
    cache.length += T;
    const { final, logits } = this.unembed_forward(x, T);
    if (trace) Object.assign(trace, { ln_f: final, logits });
    return logits;
  }

  // Logits (T, V) from a residual stream (T, C): the final norm, then the output matrix. The logit lens reads
  // the stream after every layer through it (lens.py's read_out).
  unembed_forward(x, T) {
    const c = this.config;
    const final = this.norm_forward(x, T, "transformer.ln_f");
    const head = this.optional("lm_head.weight") || this.weight("transformer.wte.weight"); // tied: the embedding
    return { final, logits: linear_forward(final, T, head, null, c.n_embd, c.vocab_size) };
  }
}

// --- sampling (generate.py's filter_logits and sample_next) ---------------------------------------------------

// Scaled by temperature, with what top-k and top-p exclude set to -Infinity. The largest logit is subtracted
// first, so a tiny temperature stays greedy instead of overflowing.
function filter_logits(logits, { temperature = 1, topK = null, topP = null } = {}) {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const scaled = Float64Array.from(logits, (v) => (v - max) / temperature);
  if (topK !== null && topK < scaled.length) {
    const kth = Array.from(scaled).sort((a, b) => b - a)[topK - 1];
    for (let i = 0; i < scaled.length; i++) if (scaled[i] < kth) scaled[i] = -Infinity;
  }
  if (topP !== null && topP < 1) {
    const order = Array.from(scaled.keys()).sort((a, b) => scaled[b] - scaled[a] || a - b);
    const probabilities = softmax(scaled);
    let before = 0;
    order.forEach((index, rank) => {
      const drop = rank > 0 && before >= topP; // the tokens ahead of it already reach p; the top one stays
      before += probabilities[index];
      if (drop) scaled[index] = -Infinity;
    });
  }
  return scaled;
}

function softmax(values) {
  let max = -Infinity;
  for (const v of values) if (v > max) max = v;
  const e = Float64Array.from(values, (v) => Math.exp(v - max));
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / total);
}

function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

// A seeded stream of uniforms in [0, 1) (mulberry32): the browser's own draws, not PyTorch's, so seeded
// samples repeat in the page but differ from `lucidlm generate --seed`; greedy decoding is identical.
function seeded_uniforms(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  };
}

function sample_next(logits, sampling, uniform) {
  if (!sampling.temperature) return argmax(logits);
  const probabilities = softmax(filter_logits(logits, sampling));
  const u = uniform() * probabilities.reduce((a, b) => a + b, 0);
  let cumulative = 0;
  for (let i = 0; i < probabilities.length; i++) {
    cumulative += probabilities[i];
    if (cumulative > u) return i;
  }
  return probabilities.length - 1;
}

// New token ids after `prompt`, decoding with the KV cache; when the context is full it keeps its newer half
// and reads that again, as generate_ids does.
function* generate_ids(model, prompt, maxNewTokens, sampling = {}) {
  const blockSize = model.config.block_size;
  const uniform = seeded_uniforms(sampling.seed ?? Math.floor(Math.random() * 2 ** 32));
  let context = prompt.slice(-blockSize);
  const cache = new KVCache(model.config);
  const V = model.config.vocab_size;
  let logits = model.forward(context, cache);
  let last = logits.subarray(logits.length - V);
  for (let n = 0; n < maxNewTokens; n++) {
    const token = sample_next(last, sampling, uniform);
    yield token;
    context.push(token);
    if (cache.length === blockSize) {
      context = context.slice(-(Math.floor(blockSize / 2) + 1));
      cache.reset();
      logits = model.forward(context, cache);
      last = logits.subarray(logits.length - V);
    } else {
      last = model.forward([token], cache);
    }
  }
}

// Reads model.json (config, tokenizer, where each tensor lies) and weights.bin (float32, little-endian).
async function load_model(base = "") {
  const manifest = await (await fetch(base + "model.json")).json();
  const buffer = await (await fetch(base + "weights.bin")).arrayBuffer();
  const tensors = {};
  for (const [name, { offset, shape }] of Object.entries(manifest.tensors)) {
    tensors[name] = new Float32Array(buffer, offset, shape.reduce((a, b) => a * b, 1));
  }
  return { model: new GPT(manifest.config, tensors), manifest };
}

export { GPT, KVCache, argmax, filter_logits, generate_ids, linear_forward, load_model, sample_next, seeded_uniforms, softmax };
