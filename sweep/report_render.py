"""The report's two renderings of the same blocks: Markdown (figures as PNG files beside it) and one
self-contained HTML page (figures inline as data URIs, no JavaScript, nothing fetched).

A block is a tuple: ("h1"|"h2"|"p", text), ("ul", [items]), ("table", headers, rows[, colours])
where `colours` gives each row's trial colour (a swatch in the HTML, the figures' colour), ("img",
path, caption), ("pre", yaml text).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path


def to_markdown(blocks: list[tuple]) -> str:
    out = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            out.append(("# " if kind == "h1" else "## ") + rest[0])
        elif kind == "p":
            out.append(rest[0])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in rest[0]))
        elif kind == "table":
            headers, rows = rest[:2]
            esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
            lines = ["| " + " | ".join(map(esc, headers)) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{rest[1]}]({Path(rest[0]).name})")
        elif kind == "pre":
            out.append(f"```yaml\n{rest[0].rstrip()}\n```")
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1240px;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:13px;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}th{background:#f0f0f0;text-align:left}
td.trial{white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}tr.best td{background:#fff6d5;font-weight:600}
.sw{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.4em;vertical-align:-1px}
img{max-width:100%;height:auto;display:block;margin:1em 0}figure{margin:1em 0}
pre{background:#f6f8fa;padding:1em;overflow:auto;font-size:12px}figcaption{color:#555;font-size:13px}
ul li{margin:.25em 0}"""


def _cell(text: str) -> str:
    numeric = text[:1].isdigit() or text[:1] in "-–." and text[1:2].isdigit()
    return f"<td class='num'>{html.escape(text)}</td>" if numeric else f"<td>{html.escape(text)}</td>"


def _table(headers: list[str], rows: list[list[str]], colours: list[str | None] | None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, r in enumerate(rows):
        cells = [_cell(c) for c in r]
        if colours and len(cells) > 1:  # a trials table: the swatch goes before the trial's name
            swatch = f"<span class='sw' style='background:{colours[i]}'></span>" if colours[i] else ""
            cells[1] = f"<td class='trial'>{swatch}{html.escape(r[1])}</td>"
        body.append(("<tr class='best'>" if "★" in "".join(r) else "<tr>") + "".join(cells) + "</tr>")
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def to_html(blocks: list[tuple], title: str) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>"
    ]
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "p"):
            out.append(f"<{kind}>{e(rest[0])}</{kind}>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in rest[0]) + "</ul>")
        elif kind == "table":
            out.append(_table(rest[0], rest[1], rest[2] if len(rest) > 2 else None))
        elif kind == "img":
            data = base64.b64encode(Path(rest[0]).read_bytes()).decode()
            out.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{e(rest[1])}'>"
                f"<figcaption>{e(rest[1])}</figcaption></figure>"
            )
        elif kind == "pre":
            out.append(f"<pre>{e(rest[0])}</pre>")
    return "\n".join(out) + "\n</body></html>\n"
