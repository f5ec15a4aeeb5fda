// The page's Python, behind the small interface a course page needs; another runtime (Pyodide, say) would fill
// the same three members. The interpreter lives in a Web Worker (python-worker.js), started on the first run,
// so that reading a lesson downloads nothing and a long cell never freezes the page.
//
//   run(code, onText) -> Promise<{ok, images}>   run a cell in the interpreter's namespace; onText(stream, text)
//                                                 receives the output as it comes; images are the PNG files the
//                                                 cell wrote, as {name, url}
//   stop()                                       end the running cell: the worker is ended with it, and the next
//                                                 run starts a fresh interpreter (the earlier cells' state is gone)
//   started                                      whether an interpreter is running (its state is the cells run)
export class BrowserPython {
  constructor(base) {
    this.base = base; // the folder of python-worker.js and the runtime's files
    this.worker = null;
    this.finish = null; // resolves the running cell's promise
  }

  get started() {
    return this.worker !== null;
  }

  run(code, onText = () => {}) {
    if (this.finish) return Promise.reject(new Error("a cell is already running"));
    this.worker ??= new Worker(new URL("python-worker.js", this.base), { type: "module" });
    const images = [];
    return new Promise((resolve, reject) => {
      this.finish = (result) => {
        this.finish = null;
        result instanceof Error ? reject(result) : resolve(result);
      };
      this.worker.onmessage = ({ data }) => {
        if (data.kind === "text") onText(data.stream, data.text);
        else if (data.kind === "image") images.push({ name: data.name, url: URL.createObjectURL(new Blob([data.bytes], { type: "image/png" })) });
        else if (data.kind === "done") this.finish({ ok: data.ok, images });
        else if (data.kind === "failed") {
          this.worker.terminate();
          this.worker = null;
          this.finish(new Error(data.message));
        }
      };
      this.worker.onerror = (event) => {
        event.preventDefault();
        this.stop(`the interpreter failed: ${event.message}`);
      };
      this.worker.postMessage({ code });
    });
  }

  stop(reason = "stopped") {
    if (this.worker) this.worker.terminate();
    this.worker = null;
    if (this.finish) this.finish({ ok: false, stopped: reason, images: [] });
  }
}
