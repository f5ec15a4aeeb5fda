"""HTTP hardening that lucidlm's two servers share (the API of `lucidlm serve` and `lucidlm tutorial`).

OpenAI's error shape for every error, the router's included; JSON bodies parsed with limits (depth, text that
is not Unicode, the schema's types); a limit on the body's size, checked before it is read; and the guard
against what a web page the user visits could make a browser send to a server on this machine.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from lucidlm.inputs import parse_json

CLIENT_GONE = 499  # nginx's "client closed request": the status of an answer nobody reads


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def error_body(message: str, param: str | None = None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


class ASCIIJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an error message that quotes the request cannot fail to
    encode, whatever text the request held."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


def error_response(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
    return ASCIIJSONResponse(error_body(message, param, kind), status_code=status)


def add_error_handlers(app: FastAPI) -> None:
    """Every error an app answers, its own and the router's (404, 405), in OpenAI's error shape."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.param, exc.kind)

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception):
        return error_response(404, f"no such path: {request.url.path}")

    @app.exception_handler(405)
    async def wrong_method(request: Request, exc: Exception):
        return error_response(405, f"{request.method} is not allowed on {request.url.path}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # a bug: this request fails, the server goes on
        return error_response(500, f"internal error ({type(exc).__name__}); the server goes on", kind="server_error")


MAX_JSON_DEPTH = 32  # no request of this API nests deeper than a few levels


async def parse_body(request: Request, schema: type[BaseModel]) -> Any:
    """The JSON body as `schema`: 400 for what is not JSON, nests too deep or holds text that is not Unicode
    (a lone surrogate such as "\\ud800"), 422 for a field of the wrong type."""
    try:
        data = parse_json(await request.body())
    except RecursionError:
        raise APIError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise APIError(400, f"the request body is {exc}") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise APIError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode()
        raise APIError(400, f"the request body holds {bad}, a lone surrogate that is not Unicode text") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise APIError(422, f"{param}: {first['msg']}", param) from None


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (0 for a plain value), without recursion."""
    depth, level = 0, [value]
    while level:
        containers = [v for v in level if isinstance(v, (list, dict))]
        if not containers:
            return depth
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return depth
        level = [child for c in containers for child in (c.values() if isinstance(c, dict) else c)]
    return depth


class BodyLimit:
    """Refuse (413) any request body larger than `limit` bytes, declared or streamed, before reading it all."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise APIError(413, f"the request body is larger than this server's limit of {self.limit} bytes")
            return message

        return await self.app(scope, counted_receive, send)

    async def _refuse(self, scope, receive, send):
        message = f"the request body is larger than this server's limit of {self.limit} bytes"
        await error_response(413, message)(scope, receive, send)


def loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


class BrowserGuard:
    """Refuse what a web page the user visits could make a browser send here (403):
    - a Host that is not this server's own loopback name (a DNS-rebinding page reaching 127.0.0.1 under its
      own name), checked when the server listens on a loopback address;
    - an Origin other than the server itself and the `allowed` ones (a cross-site page posting a request).
    Clients that are not browsers send no Origin and are not affected."""

    def __init__(self, app, allowed: tuple[str, ...] = ()):
        self.app, self.allowed = app, set(allowed)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        address, port = scope.get("server") or (None, None)
        if loopback(address):
            names = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
            if host not in names and not (port == 80 and f"{host}:80" in names):
                message = f"this server answers only as 127.0.0.1:{port} or localhost:{port}, not as {host!r}"
                return await error_response(403, message, kind="forbidden")(scope, receive, send)
        origin = headers.get(b"origin")
        if origin is not None:
            origin = origin.decode("latin-1")
            if origin != f"http://{host}" and origin not in self.allowed:
                message = f"requests from the web page {origin} are refused; allow it with --allow-origin {origin}"
                return await error_response(403, message, kind="forbidden")(scope, receive, send)
        return await self.app(scope, receive, send)
