// The course page's code editor: CodeMirror 6 with Python, bundled into one ES module by `make vendor-js`.
// Decoration, StateEffect and StateField mark the line where a cell failed.
export { EditorView, basicSetup } from "codemirror";
export { Decoration, keymap } from "@codemirror/view";
export { StateEffect, StateField } from "@codemirror/state";
export { python } from "@codemirror/lang-python";
