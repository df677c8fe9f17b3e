"""``GET /``: the try-it page (``runtime/static/``), one self-contained HTML document.

The page is three plain files so they can be read and edited as what they are; they are joined once,
at first use, into one response (the stylesheet and the script inlined where ``index.html`` links
them), so the route table gains one entry and a browser makes one request for the page. Nothing on
the page loads from another host: the Content-Security-Policy below lets the browser fetch only
from this server (and the ``blob:`` preview of a chosen image), so a stray external URL fails in the
browser instead of leaking a request. The script and style are allowed by their sha256, not by
``'unsafe-inline'``. The page calls the server's own JSON APIs; with access control on, it needs a
token only for those calls, never to load.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent.parent / "static"
STYLE_LINK = '<link rel="stylesheet" href="app.css">'
SCRIPT_TAG = '<script src="app.js"></script>'


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@functools.cache
def page() -> tuple[bytes, str]:
    """The joined page and its Content-Security-Policy (read once; the files ship in the image)."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    style = (STATIC / "app.css").read_text(encoding="utf-8")
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    if STYLE_LINK not in html or SCRIPT_TAG not in html:
        raise RuntimeError(f"{STATIC / 'index.html'} must contain {STYLE_LINK} and {SCRIPT_TAG}")
    html = html.replace(STYLE_LINK, f"<style>{style}</style>").replace(SCRIPT_TAG, f"<script>{script}</script>")
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_sha256(script)}",
            f"style-src {_sha256(style)}",
            "connect-src 'self'",
            "img-src 'self' blob: data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return html.encode("utf-8"), policy


async def index(request: web.Request) -> web.Response:
    body, policy = page()
    headers = {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)
