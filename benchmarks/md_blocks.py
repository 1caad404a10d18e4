"""Generated tables kept inside a markdown page: the one place that puts a
benchmark's block between its start and end markers (or appends it under a
heading the first time)."""
from __future__ import annotations

import pathlib


def write_block(path, block, start, end, heading):
    """Replace the text between ``start`` and ``end`` in the file at
    ``path`` by ``block`` (which holds both markers); without the markers,
    append ``heading`` and ``block``."""
    p = pathlib.Path(path)
    text = p.read_text() if p.exists() else ""
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n" + block + "\n"
    p.write_text(text)
