"""Figures and tables -> one self-contained HTML file, the PNGs also written beside it.

The page needs nothing else to be read: each image is embedded as a base64
``data:`` URL and the style is inline. The same images are written as
``<stem>-<name>.png`` next to the HTML file, to be put in a paper or a chat.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 9px; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f2f2f2; }
figure { margin: 1.5em 0; } img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
p.note { color: #555; font-size: 0.9em; }
"""


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure rendered by Agg as PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


@dataclass
class Image:
    name: str       # file name part: ``<stem>-<name>.png``
    caption: str
    png: bytes


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Section:
    title: str
    parts: list[Image | Table] = field(default_factory=list)


def image(name: str, caption: str, fig: Figure) -> Image:
    return Image(name, caption, png_bytes(fig))


def _table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in t.rows)
    note = f'<p class="note">{html.escape(t.note)}</p>\n' if t.note else ""
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n{note}"


def _image(im: Image, file: str) -> str:
    data = base64.b64encode(im.png).decode("ascii")
    return (f'<figure><img alt="{html.escape(im.caption)}" src="data:image/png;base64,{data}">\n'
            f"<figcaption>{html.escape(im.caption)} ({html.escape(file)})</figcaption></figure>\n")


def png_path(out: Path, name: str) -> Path:
    """Where the image ``name`` of the report ``out`` is written."""
    return out.with_name(f"{out.stem}-{name}.png")


def render(title: str, lines: list[str], sections: list[Section], out: Path) -> str:
    """The whole HTML page."""
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"]
    parts += [f'<p class="note">{html.escape(line)}</p>\n' for line in lines]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>\n")
        for p in s.parts:
            parts.append(_table(p) if isinstance(p, Table) else _image(p, png_path(out, p.name).name))
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(out: Path, title: str, lines: list[str], sections: list[Section]) -> list[Path]:
    """Write the PNGs and then the HTML page; returns the PNG paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for s in sections:
        for p in s.parts:
            if isinstance(p, Image):
                path = png_path(out, p.name)
                path.write_bytes(p.png)
                written.append(path)
    out.write_text(render(title, lines, sections, out), encoding="utf-8")
    return written
