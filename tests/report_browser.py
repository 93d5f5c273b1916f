"""Render a sweep's report.html in headless Chromium and say what a person would see broken: images
that do not load, figures wider than the page (shown shrunk, or running off it), tables wider than
the page, a page that scrolls sideways. Used by tests/sweep/test_report.py; also a script, for a real sweep's report:

    python tests/report_browser.py qlora-sweep-results/quickstart/report.html --screenshot shot.png

The report has no JavaScript; the check runs in a copy of it with one script added at its end.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTH = 1300  # the window the reviewers looked at the page in
CHECK = """<script>addEventListener('load', () => {
  const page = document.documentElement.clientWidth, body = document.body.clientWidth;
  const style = getComputedStyle(document.body);
  const content = body - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const imgs = [...document.images];
  const out = {
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    off_page: imgs.filter(i => i.getBoundingClientRect().right > page + 1).map(i => i.alt),
    shrunk: imgs.filter(i => i.naturalWidth > content + 1).map(i => `${i.alt} (${i.naturalWidth}px)`),
    wide_tables: [...document.querySelectorAll('table')].filter(t => t.getBoundingClientRect().width > content + 1)
      .map(t => t.querySelector('th') ? t.querySelector('th').parentNode.textContent.slice(0, 60) : 'table'),
    content_width: content, scrolls_sideways: document.documentElement.scrollWidth > page + 1,
  };
  document.body.insertAdjacentHTML('beforeend', `<pre id="report-check">${JSON.stringify(out)}</pre>`);
});</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(url: str, *flags: str, profile: str) -> subprocess.CompletedProcess:
    cmd = [
        chromium() or "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *flags,
        url,
    ]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)


def check_report(html_path: Path, screenshot: Path | None = None, height: int = 6000) -> dict:
    """What Chromium saw: {"images", "broken", "off_page", "shrunk", "wide_tables", "content_width",
    "scrolls_sideways", "dom"}; with `screenshot`, a PNG of the page as is (it has no script)."""
    text = html_path.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(text.replace("</body>", CHECK + "</body>"), encoding="utf-8")
        dom = _run(
            probe.as_uri(),
            f"--window-size={WIDTH},{height}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            profile=str(Path(tmp) / "p1"),
        ).stdout
        if screenshot is not None:
            _run(
                html_path.resolve().as_uri(),
                f"--window-size={WIDTH},{height}",
                f"--screenshot={screenshot}",
                profile=str(Path(tmp) / "p2"),
            )
    found = re.findall(r'<pre id="report-check">(\{.*?)</pre>', dom, re.S)  # not the script's own text
    if not found:
        raise RuntimeError(f"the check did not run in Chromium; the page ends with: {dom[-500:]}")
    return {
        **json.loads(found[-1].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")),
        "dom": dom,
    }


def problems(seen: dict) -> list[str]:
    out = [f"broken image: {alt}" for alt in seen["broken"]]
    out += [f"figure runs off the page: {alt}" for alt in seen["off_page"]]
    out += [
        f"figure wider than the page ({seen['content_width']:.0f}px), shown shrunk: {a}"
        for a in seen["shrunk"]
    ]
    out += [f"table wider than the page (scrolls in its box): {head}" for head in seen["wide_tables"]]
    return out + (["the page scrolls sideways"] if seen["scrolls_sideways"] else [])


if __name__ == "__main__":
    if chromium() is None:
        sys.exit("chromium is not installed (Debian: apt-get install -y chromium)")
    args = sys.argv[1:]
    shot = Path(args[args.index("--screenshot") + 1]) if "--screenshot" in args else None
    result = check_report(Path(args[0]), shot)
    found = problems(result)
    print(f"{result['images']} images, page content {result['content_width']:.0f}px wide")
    print("\n".join(found) or "no problems")
    sys.exit(1 if found else 0)
