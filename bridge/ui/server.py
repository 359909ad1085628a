"""The HTTP side of ``mbridge ui`` (the standard library's threading server): pages, the
JSON the queues page follows, static files from the package (nothing from a CDN), an
optional token, and CSRF protection on the two actions (replay, delete)."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from bridge.outage import one_line
from bridge.queuestats import dead_page, queue_stats
from bridge.ui import pages
from bridge.ui.watch import Watch

log = logging.getLogger("bridge.ui")

STATIC = Path(__file__).parent / "static"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
TOKEN_COOKIE = "mbridge_ui_token"
MAX_FORM = 64 * 1024
PAGE = 50
"""Dead letters shown per page."""


class UiServer:
    """Serves ``watch`` on ``host:port`` in a daemon thread."""

    def __init__(self, watch: Watch, host: str = "127.0.0.1", port: int = 8808,
                 token: str = "") -> None:
        self.watch = watch
        self.token = token
        self.csrf = secrets.token_urlsafe(24)
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="bridge-ui",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> UiServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def allowed(self, query: dict[str, list[str]], cookie: str) -> bool:
        if not self.token:
            return True
        given = (query.get("token") or [cookie])[0] or ""
        return hmac.compare_digest(given.encode(), self.token.encode())

    # ------------------------------------------------------------------ pages

    def get(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        watch = self.watch
        if path == "/":
            return _html(pages.queues_page(watch.queues(), watch.interval))
        if path == "/api/queues":
            return 200, "application/json", json.dumps(watch.queues()).encode()
        if path == "/api/workers":
            return 200, "application/json", json.dumps(watch.workers(), default=str).encode()
        if path == "/workers":
            quiet = [one.label for one in watch.watched if one.mailbox_url is None]
            return _html(pages.workers_page(watch.workers(), quiet))
        if path == "/task":
            task_id = (query.get("id") or [""])[0].strip()
            return _html(pages.task_page(task_id, watch.task(task_id) if task_id else None))
        if path == "/dead":
            return _html(self._dead(query))
        if path.startswith("/static/"):
            return _static(path[len("/static/"):])
        return 404, "text/plain; charset=utf-8", b"not found\n"

    def _dead(self, query: dict[str, list[str]], done: str = "") -> str:
        targets = [(n, one.label, one.queues) for n, one in enumerate(self.watch.watched)]
        target, queue = _target(query, len(targets))
        entries: list[dict[str, Any]] = []
        count, can_delete = 0, False
        if target is not None and queue:
            one = self.watch.watched[target]
            with one.lock:
                entries = dead_page(one.broker, queue, PAGE)
                count = queue_stats(one.broker, queue).get("dead", len(entries))
            can_delete = hasattr(one.broker, "delete_dead")
        return pages.dead_page(targets, target, queue, entries, count, self.csrf, can_delete,
                               done)

    def post(self, path: str, form: dict[str, list[str]]) -> tuple[int, str, bytes]:
        if not hmac.compare_digest((form.get("csrf") or [""])[0].encode(), self.csrf.encode()):
            return 403, "text/plain; charset=utf-8", b"bad or missing CSRF token\n"
        target, queue = _target(form, len(self.watch.watched))
        if target is None or not queue or path not in ("/dead/replay", "/dead/delete"):
            return 400, "text/plain; charset=utf-8", b"which queue?\n"
        one = self.watch.watched[target]
        count = int((form.get("count") or ["0"])[0] or 0)
        action = "replay_dead" if path == "/dead/replay" else "delete_dead"
        run = getattr(one.broker, action, None)
        if run is None:
            return 400, "text/plain; charset=utf-8", b"this broker cannot do that\n"
        try:
            with one.lock:
                moved = int(run(queue, count))
        except Exception as exc:
            done = f"{action.replace('_dead', '')} failed: {one_line(exc)}"
        else:
            verb = "replayed" if action == "replay_dead" else "deleted"
            done = f"{verb} {moved} message(s) of {queue}"
            log.info("ui: %s", done)
        location = "/dead?" + urlencode({"target": target, "queue": queue, "done": done})
        return 303, location, b""


def _target(query: dict[str, list[str]], size: int) -> tuple[int | None, str]:
    try:
        target = int((query.get("target") or [""])[0])
    except ValueError:
        return None, ""
    if not 0 <= target < size:
        return None, ""
    return target, (query.get("queue") or [""])[0]


def _html(text: str) -> tuple[int, str, bytes]:
    return 200, "text/html; charset=utf-8", text.encode()


def _static(name: str) -> tuple[int, str, bytes]:
    path = (STATIC / name).resolve()
    if path.parent != STATIC.resolve() or not path.is_file():
        return 404, "text/plain; charset=utf-8", b"not found\n"
    return 200, TYPES.get(path.suffix, "application/octet-stream"), path.read_bytes()


def _handler(ui: UiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mbridge-ui"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            if not ui.allowed(query, self._cookie()):
                self._reply(401, "text/plain; charset=utf-8",
                            b"token needed: open the address mbridge ui printed\n")
                return
            if "token" in query and ui.token:  # remember it, then drop it from the address
                self.send_response(303)
                self.send_header("Set-Cookie", f"{TOKEN_COOKIE}={ui.token}; HttpOnly; "
                                 "SameSite=Strict; Path=/")
                self.send_header("Location", parts.path or "/")
                self.end_headers()
                return
            if parts.path == "/dead" and "done" in query:
                self._reply(*_html(ui._dead(query, query["done"][0])))
                return
            try:
                self._reply(*ui.get(parts.path, query))
            except Exception as exc:
                log.exception("ui: GET %s failed", parts.path)
                self._reply(503, "text/plain; charset=utf-8",
                            f"could not read the broker: {one_line(exc)}\n".encode())

        def do_POST(self) -> None:
            if not ui.allowed({}, self._cookie()):
                self._reply(401, "text/plain; charset=utf-8", b"token needed\n")
                return
            size = int(self.headers.get("Content-Length") or 0)
            if size > MAX_FORM:
                self._reply(413, "text/plain; charset=utf-8", b"form too large\n")
                return
            form = parse_qs(self.rfile.read(size).decode("utf-8", "replace"))
            status, kind, body = ui.post(urlsplit(self.path).path, form)
            if status == 303:
                self.send_response(303)
                self.send_header("Location", kind)
                self.end_headers()
                return
            self._reply(status, kind, body)

        def _cookie(self) -> str:
            jar = SimpleCookie(self.headers.get("Cookie") or "")
            return jar[TOKEN_COOKIE].value if TOKEN_COOKIE in jar else ""

        def _reply(self, status: int, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return Handler
