// `lucidlm tutorial`'s Python, behind the interface of python.js: the page's cells run on this machine in a
// kernel of the page's own (POST /api/run with the page's kernel id), which keeps their variables, as a
// notebook's kernel does; any lesson runs, PyTorch included. The output streams back as JSON lines while the
// cell runs. Stop asks the server to end the kernel (/api/stop); the next run starts a fresh one.
export class ServerPython {
  constructor(url) {
    this.url = url;
    this.kernel = crypto.randomUUID().replaceAll("-", "");
    this.cellsRun = 0; // cells this kernel ran: it has state once one ran
    this.controller = null;
  }

  get started() {
    return this.cellsRun > 0;
  }

  async run(code, onText = () => {}) {
    this.controller = new AbortController();
    this.stopped = null;
    let result = null;
    try {
      const response = await fetch(this.url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ kernel: this.kernel, code }),
        signal: this.controller.signal,
      });
      if (!response.ok) {
        const answer = await response.json();
        throw new Error(answer.error ? answer.error.message : response.statusText);
      }
      for await (const message of jsonLines(response.body)) {
        if (message.stream) onText(message.stream, message.text);
        else result = message;
      }
    } catch (error) {
      if (error.name === "AbortError") return { ok: false, stopped: this.stopped, images: [] };
      throw error;
    } finally {
      this.controller = null;
    }
    if (result.status === "ended" || result.status === "stopped") {
      this.cellsRun = 0;
      return { ok: false, stopped: result.note, images: [] };
    }
    if (result.stdout_rest) onText("stdout", result.stdout_rest);
    if (result.stderr_rest) onText("stderr", result.stderr_rest);
    this.cellsRun = result.ended ? 0 : this.cellsRun + 1; // a limit ends the kernel
    const images = result.images.map((image) => ({ name: image.name, url: `data:image/png;base64,${image.data}` }));
    return { ok: result.status === "ok", ended: result.ended, images };
  }

  stop(reason = "stopped") {
    this.stopped = reason;
    this.cellsRun = 0;
    if (this.controller && !this.controller.signal.aborted) this.controller.abort();
    fetch(new URL("stop", new URL(this.url, location.href)), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ kernel: this.kernel }),
    });
  }
}

// The objects of a response of JSON lines, each as soon as its line has come.
async function* jsonLines(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += value;
    let end;
    while ((end = pending.indexOf("\n")) >= 0) {
      yield JSON.parse(pending.slice(0, end));
      pending = pending.slice(end + 1);
    }
  }
  if (pending.trim()) yield JSON.parse(pending);
}
