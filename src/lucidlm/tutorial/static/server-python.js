// `lucidlm tutorial`'s Python, behind the interface of python.js: a cell runs on this machine (/api/run), in a
// fresh sandboxed subprocess with the cells this page ran before it, so that it sees their variables as in a
// notebook; any lesson runs, PyTorch included. Stop asks the server to end the cell (/api/stop).
export class ServerPython {
  constructor(url) {
    this.url = url;
    this.history = []; // the cells that ran to their end, in order: what the next one runs after
    this.controller = null;
  }

  get started() {
    return this.history.length > 0;
  }

  async run(code, onText = () => {}) {
    this.controller = new AbortController();
    let response;
    try {
      response = await fetch(this.url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ cells: [...this.history, code] }),
        signal: this.controller.signal,
      });
    } catch (error) {
      if (error.name === "AbortError") return { ok: false, stopped: this.stopped, images: [] };
      throw error;
    }
    this.controller = null;
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error ? answer.error.message : response.statusText);
    if (answer.stdout) onText("stdout", answer.stdout);
    if (answer.stderr) onText("stderr", answer.stderr);
    const ok = answer.status === "ok";
    if (ok) this.history.push(code);
    return { ok, images: answer.images.map((image) => ({ name: image.name, url: `data:image/png;base64,${image.data}` })) };
  }

  stop(reason = "stopped") {
    this.stopped = reason;
    this.history = [];
    if (this.controller && !this.controller.signal.aborted) {
      this.controller.abort();
      fetch(new URL("stop", new URL(this.url, location.href)), { method: "POST" });
    }
  }
}
