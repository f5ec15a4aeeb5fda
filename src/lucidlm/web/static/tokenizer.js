// lucidlm's three tokenizers in JavaScript (twins of src/lucidlm/tokenizers/char.py, word.py, bpe.py), read
// from model.json's "tokenizer". Their split patterns come from the export, already written for JavaScript's
// regular expressions (with the same whitespace as Python's), and tests/web holds their ids to Python's.
"use strict";

class CharTokenizer {
  constructor({ chars }) {
    this.chars = chars;
    this.ids = new Map(chars.map((c, i) => [c, i]));
  }
  encode(text) {
    return Array.from(text, (c) => {
      // Array.from walks code points, as Python's str does
      if (!this.ids.has(c)) throw new Error(`the character ${JSON.stringify(c)} is not in the vocabulary`);
      return this.ids.get(c);
    });
  }
  decode(ids) {
    return ids.map((i) => this.chars[i]).join("");
  }
}

class WordTokenizer {
  constructor({ vocab, split }) {
    this.vocab = vocab;
    this.split = new RegExp(split, "gu");
    this.ids = new Map(vocab.map((w, i) => [w, i]));
  }
  encode(text) {
    return Array.from(text.matchAll(this.split), ([word]) => this.ids.get(word) ?? 0); // 0 is <unk>
  }
  decode(ids) {
    return ids.map((i) => this.vocab[i]).join("");
  }
}

function base64_bytes(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

class BPETokenizer {
  constructor({ token_bytes, merges, split, special_tokens }) {
    this.tokenBytes = token_bytes.map(base64_bytes);
    this.byteIds = new Array(256);
    this.tokenBytes.forEach((bytes, id) => {
      if (bytes.length === 1) this.byteIds[bytes[0]] = id;
    });
    const idOf = new Map(this.tokenBytes.map((bytes, id) => [bytes.join(","), id]));
    // rank and result of each learned pair, as BPETokenizer.ranks
    this.ranks = new Map(
      merges.map(([a, b], rank) => {
        const joined = [...this.tokenBytes[a], ...this.tokenBytes[b]].join(",");
        return [`${a},${b}`, [rank, idOf.get(joined)]];
      }),
    );
    this.split = new RegExp(split, "gu");
    this.special = special_tokens;
    this.specialText = new Map(Object.entries(special_tokens).map(([text, id]) => [id, text]));
    this.encoder = new TextEncoder();
    this.decoder = new TextDecoder("utf-8"); // malformed bytes become U+FFFD, as errors="replace"
  }

  // One pre-tokenized chunk: apply the merges, lowest rank first, until none applies.
  encode_chunk(chunk) {
    let ids = Array.from(this.encoder.encode(chunk), (b) => this.byteIds[b]);
    while (ids.length >= 2) {
      let best = null;
      for (let i = 0; i + 1 < ids.length; i++) {
        const found = this.ranks.get(`${ids[i]},${ids[i + 1]}`);
        if (found && (best === null || found[0] < best[0])) best = [found[0], found[1], ids[i], ids[i + 1]];
      }
      if (best === null) break;
      const [, merged, a, b] = best;
      const next = [];
      for (let i = 0; i < ids.length; i++) {
        if (i + 1 < ids.length && ids[i] === a && ids[i + 1] === b) {
          next.push(merged);
          i++;
        } else next.push(ids[i]);
      }
      ids = next;
    }
    return ids;
  }

  encode(text) {
    for (const special of Object.keys(this.special)) {
      if (text.includes(special)) throw new Error(`the text contains the special token ${special}`);
    }
    return Array.from(text.matchAll(this.split), ([chunk]) => this.encode_chunk(chunk)).flat();
  }

  decode(ids) {
    const parts = ids.map((i) => (i < this.tokenBytes.length ? this.tokenBytes[i] : this.encoder.encode(this.specialText.get(i))));
    const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.length;
    }
    return this.decoder.decode(bytes);
  }
}

function load_tokenizer(data) {
  const kinds = { char: CharTokenizer, word: WordTokenizer, bpe: BPETokenizer };
  if (!(data.kind in kinds)) throw new Error(`no ${data.kind} tokenizer in the browser`);
  return new kinds[data.kind](data);
}

export { load_tokenizer };
