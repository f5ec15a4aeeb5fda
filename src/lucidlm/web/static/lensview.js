// The lens view's tables, drawn the same way by the inspector (`lucidlm serve`, numbers from lens.py) and by
// the exported page (numbers from gpt.js in the browser): the logit-lens grid and the heads' heatmaps.
// `lens` is /api/lens's answer and `heads` /api/heads's, whichever side computed them.

// A token's text in a cell: newlines and tabs made visible.
function shown(text) {
  return text.replace(/\n/g, "⏎\n").replace(/\t/g, "⇥");
}

function probabilityColour(p) {
  return `hsl(${Math.round(120 * p)}, 70%, 82%)`; // 0: red, 1: green
}

function cell(row, text, shade, title) {
  const td = row.insertCell();
  td.textContent = text;
  if (shade) td.style.background = shade;
  if (title) td.title = title;
  return td;
}

// The logit lens: a row a reading (the embeddings, then each layer), a column a position, and each reading's
// KL divergence from the output. A cell's title lists the top tokens with their probabilities.
function drawLens(table, lens) {
  table.innerHTML = "";
  const header = table.createTHead().insertRow();
  header.appendChild(document.createElement("th"));
  for (const token of lens.tokens) header.appendChild(document.createElement("th")).textContent = shown(token);
  header.appendChild(document.createElement("th")).textContent = "KL";
  const body = table.createTBody();
  lens.layers.forEach((layer, l) => {
    const row = body.insertRow();
    row.appendChild(document.createElement("th")).textContent = layer;
    lens.top_tokens[l].forEach((top, t) => {
      const p = lens.top_probabilities[l][t];
      const runners = top.map((text, k) => `${JSON.stringify(text)} ${p[k].toFixed(3)}`).join("\n");
      cell(row, shown(top[0]), probabilityColour(p[0]), runners);
    });
    cell(row, lens.kl_to_output[l].toFixed(3));
  });
  table.dataset.drawn = String(lens.layers.length);
}

function headTable(table, caption, values, colour) {
  table.innerHTML = "";
  table.createCaption().textContent = caption;
  const header = table.createTHead().insertRow();
  header.appendChild(document.createElement("th"));
  values[0].forEach((_, h) => {
    header.appendChild(document.createElement("th")).textContent = `head ${h}`;
  });
  const body = table.createTBody();
  values.forEach((heads, l) => {
    const row = body.insertRow();
    row.appendChild(document.createElement("th")).textContent = `layer ${l}`;
    for (const value of heads) cell(row, value.toFixed(3), colour(value));
  });
}

// Two heatmaps of layers x heads: the induction scores, and the loss the text gains without each head.
function drawHeads(inductionTable, ablationTable, heads) {
  headTable(inductionTable, "induction score", heads.induction, (s) => `rgba(35, 57, 93, ${0.8 * s})`);
  const largest = Math.max(1e-9, ...heads.ablation.heads.flat().map(Math.abs));
  headTable(ablationTable, `loss added by zeroing the head (base ${heads.ablation.loss.toFixed(3)})`,
    heads.ablation.heads, (d) => `rgba(190, 60, 40, ${(0.8 * Math.max(0, d)) / largest})`);
  inductionTable.dataset.drawn = ablationTable.dataset.drawn = String(heads.induction.length);
}

export { cell, drawHeads, drawLens, probabilityColour, shown };
