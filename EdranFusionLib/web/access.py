"""Who may talk to the server: the access token, the Host header and cross-site requests (an ASGI middleware).

- With a token (required whenever the server listens beyond loopback), every request carries it: an
  ``Authorization: Bearer`` header, or the HttpOnly cookie set when the page is opened at ``/?token=...``.
  Tokens are compared in constant time.
- On a loopback address only loopback host names are accepted, so a web page elsewhere cannot reach the server
  through DNS rebinding.
- Requests that change state need the page's ``X-EdranFusion-Client`` header: a cross-site form or script cannot
  send it without a CORS preflight, which this server never grants.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

COOKIE = "edranfusion_token"
CLIENT_HEADER = b"x-edranfusion-client"
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
_SAFE_METHODS = {"GET", "HEAD"}


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(headers: dict[bytes, bytes]) -> str:
    host = headers.get(b"host", b"").decode("latin-1").lower()
    if host.startswith("["):  # [::1]:8765
        return host[1:].split("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class AccessGuard:
    """Wraps the app: refuses requests without the token, with a foreign Host, or cross-site writes."""

    def __init__(self, app, token: str | None, loopback_only: bool) -> None:  # noqa: ANN001 (an ASGI app)
        self.app, self.token, self.loopback_only = app, token, loopback_only

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 (ASGI)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.loopback_only and not is_loopback(_host_name(headers)):
            await _refuse(send, 403, "this server answers only on localhost; open http://127.0.0.1:<port>/")
            return
        if self.token is not None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if scope["path"] == "/" and self._matches(query.get("token", [""])[0]):
                await _set_cookie_and_reload(send, self.token)
                return
            if not self._carried(headers):
                await _refuse(send, 401, "this server needs its access token; open the address it printed at start "
                              "(ending in ?token=...) or send 'Authorization: Bearer <token>'")
                return
        if scope["method"] not in _SAFE_METHODS and not headers.get(CLIENT_HEADER):
            await _refuse(send, 403,
                          "missing the X-EdranFusion-Client header; use the page or EdranFusionLib.web.client")
            return
        await self.app(scope, receive, send)

    def _matches(self, candidate: str) -> bool:
        return bool(candidate) and secrets.compare_digest(candidate.encode(), self.token.encode())

    def _carried(self, headers: dict[bytes, bytes]) -> bool:
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if authorization.startswith("Bearer ") and self._matches(authorization[len("Bearer "):]):
            return True
        cookie = SimpleCookie()
        cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
        return COOKIE in cookie and self._matches(cookie[COOKIE].value)


async def _refuse(send, status: int, message: str) -> None:  # noqa: ANN001
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _set_cookie_and_reload(send, token: str) -> None:  # noqa: ANN001
    """Keep the token in an HttpOnly cookie and drop it from the address bar (and the browser's history)."""
    cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/".encode()
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", b"/"), (b"set-cookie", cookie), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
