// The course page's code editor: CodeMirror 6 with Python, bundled into one ES module by `make vendor-js`.
export { EditorView, basicSetup } from "codemirror";
export { keymap } from "@codemirror/view";
export { python } from "@codemirror/lang-python";
