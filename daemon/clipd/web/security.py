"""Who may use the web app: the user's token, the bound Host, the page's own Origin.

The Unix socket admits only its user; a loopback port admits every local process and, through
the user's browser, every web site. So every request but the static assets (which hold no
data) must carry the token: as `Authorization: Bearer TOKEN` (programs), or as the session
cookie that `?token=TOKEN` is traded for once (the browser; `clipq web` opens that URL). The
cookie is HttpOnly and SameSite=Strict, and its value is derived from the token, not the token
itself. A Host header other than the bound loopback name is refused (DNS rebinding: a site that
points its own name at 127.0.0.1 gets nothing), and so is a state-changing request from another
Origin (cross-site request forgery).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from starlette.datastructures import URL, Headers, MutableHeaders, QueryParams
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipd.web.errors import FORBIDDEN, UNAUTHENTICATED, error_response

SESSION_COOKIE = "clipd_session"
TOKEN_PARAM = "token"
# Methods that change nothing; every other one must come from the page's own origin.
_SAFE_METHODS = frozenset({"GET", "HEAD"})
# Served to everyone: the page's code and style, the icon. They hold no data.
_PUBLIC_PREFIX = "/static/"
# Every response: no framing by other sites, no guessing of types, no URL (token!) leaking
# through Referer, and a page that may load nothing from anywhere but here.
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
}

# Stands for the login page, which is read asynchronously once the refusal is decided.
_LOGIN = Response(status_code=401)

_LOGIN_MESSAGE = (
    "this clipd web API needs the user's token: send 'Authorization: Bearer TOKEN' with the "
    "token in {token_file}, or open the page with `clipq web`"
)


def session_value(token: str) -> str:
    """The session cookie's value: it admits a browser, but is not the token TCP accepts."""
    return hmac.new(token.encode(), b"clipd web session", hashlib.sha256).hexdigest()


class Guard:
    """ASGI middleware in front of the whole app: Host, Origin, then token or cookie."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        token_file: str,
        hosts: Iterable[str],
        login_page: Callable[[], Awaitable[Response]],
    ) -> None:
        self._app = app
        self._bearer = f"Bearer {token}".encode()
        self._token = token.encode()
        self._session = session_value(token).encode()
        self._hosts = frozenset(hosts)
        self._origins = frozenset(f"http://{host}" for host in self._hosts)
        self._login_page = login_page
        self._message = _LOGIN_MESSAGE.format(token_file=token_file)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        send = _with_security_headers(send)
        refusal = self._refusal(scope)
        if refusal is _LOGIN:
            refusal = await self._login_page()
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self._app(scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:
        """The answer to a request that may not reach the app; None to let it through."""
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if host not in self._hosts:
            return error_response(
                FORBIDDEN,
                f"the Host header {host!r} is not this server's name; open "
                f"http://{min(self._hosts)}/ instead",
                403,
            )
        origin = headers.get("origin")
        unsafe = scope["method"] not in _SAFE_METHODS
        if unsafe and origin is not None and origin not in self._origins:
            return error_response(
                FORBIDDEN, f"requests from {origin} may not change anything here", 403
            )
        path: str = scope["path"]
        if path.startswith(_PUBLIC_PREFIX):
            return None
        params = QueryParams(scope.get("query_string", b""))
        offered = params.get(TOKEN_PARAM)
        if offered is not None:
            return self._trade(scope, params, offered)
        if self._admitted(headers):
            return None
        return self._unauthenticated(path)

    def _admitted(self, headers: Headers) -> bool:
        bearer = headers.get("authorization")
        if bearer is not None:
            return hmac.compare_digest(bearer.encode(), self._bearer)
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header admits nobody, and breaks nothing
            return False
        morsel = cookies.get(SESSION_COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self._session)

    def _trade(self, scope: Scope, params: QueryParams, offered: str) -> Response:
        """?token=T: the right token becomes the session cookie and a redirect to the same
        URL without it, so the token stays out of history, bookmarks and the address bar."""
        if not hmac.compare_digest(offered.encode(), self._token):
            return self._unauthenticated(scope["path"])
        kept = [(key, value) for key, value in params.multi_items() if key != TOKEN_PARAM]
        clean = URL(scope=scope).replace(query=urlencode(kept))
        # One leading slash: "//host/..." in Location would send the browser to another site.
        path = "/" + clean.path.lstrip("/")
        response = RedirectResponse(f"{path}{'?' + clean.query if clean.query else ''}", 303)
        response.set_cookie(
            SESSION_COOKIE,
            self._session.decode(),
            httponly=True,
            samesite="strict",
            path="/",
        )
        return response

    def _unauthenticated(self, path: str) -> Response:
        if path == "/":
            return _LOGIN  # a person: the page that says how to sign in
        return error_response(UNAUTHENTICATED, self._message, 401)


def _with_security_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in _SECURITY_HEADERS.items():
                headers.setdefault(name, value)
        await send(message)

    return sending
