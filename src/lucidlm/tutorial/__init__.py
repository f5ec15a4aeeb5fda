"""The course in one place: the lessons read as cells (lessons.py), their markdown and maths rendered
(markdown.py), the local tutorial that runs edited cells on this machine (server.py, `lucidlm tutorial`), and
the static site built from them (site.py, `lucidlm tutorial --build`). The two pages share the lesson files,
the rendering and the style; they differ in where a cell runs."""
