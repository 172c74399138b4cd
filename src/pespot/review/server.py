"""The local web server of ``pespot review``: Python's standard ``http.server`` (threaded), no framework.

Why the standard library: the page needs a handful of JSON calls, static files and byte ranges of a few video
files, for one person on one machine. ``http.server`` does that with no dependency to install, pin or audit, and
starts in milliseconds; Starlette/uvicorn or Flask would add packages (and an ASGI/WSGI layer) for nothing this
page uses. The one thing ``http.server`` lacks, HTTP byte ranges (a ``<video>`` element seeks with them), is
``_send_file`` below.

Routes (nothing else answers, so no path on disk can be asked for):

* ``GET /`` the page; ``GET /static/<name>`` its script and style, by exact name from the package's ``static/``;
* ``GET /api/state`` classes, videos, labels, predictions, version; ``GET /api/scores/<i>`` per-frame scores;
* ``GET /api/media/<i>`` makes video ``i`` playable frame-exactly (transcoding it once, ``media.prepare``) and
  says where; ``GET /api/progress/<i>`` how far that is; ``GET /media/<i>.mp4`` the playable file, with ranges;
* ``POST /api/save`` the labels of every video, checked and written by ``ReviewSession.save``.

Safety: bound to 127.0.0.1 unless ``--host`` says otherwise; on a loopback address, a request whose ``Host``
header is not a loopback name is refused (another site's page cannot reach the server through DNS rebinding);
every API call and video request carries a token that only the page served here knows (a custom header for the
API, so a cross-site form cannot post a save); videos are addressed by their number in the session, never by path;
saves write only the files ``ReviewSession.outputs`` named at start-up.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pespot.errors import PespotError
from pespot.review import media
from pespot.review.session import Conflict, ReviewSession

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".html": "text/html; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
MAX_BODY = 64 * 1024 * 1024  # a save of every label of a long season stays far below this
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class ReviewServer(ThreadingHTTPServer):
    """The server of one review session."""

    daemon_threads = True

    def __init__(self, session: ReviewSession, host: str = "127.0.0.1", port: int = 0, *,
                 cache_dir: str | Path | None = None, height: int | None = None, threshold: float = 0.5,
                 log: bool = False) -> None:
        super().__init__((host, port), ReviewHandler)
        self.session = session
        self.token = secrets.token_urlsafe(18)
        self.cache_dir = Path(cache_dir) if cache_dir else media.default_cache_dir()
        self.height = height
        self.threshold = threshold
        self.log = log
        self.loopback = host in LOOPBACK_NAMES or host.startswith("127.")
        self._playable: dict[int, media.Playable] = {}
        self._locks = [threading.Lock() for _ in session.videos]
        self.progress: dict[int, tuple[int, int]] = {}
        self.static = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}

    @property
    def url(self) -> str:
        """The page's address."""
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
        return f"http://{shown}:{port}/"

    def playable(self, index: int) -> media.Playable:
        """Video ``index`` as the browser plays it; transcoded once (per-video lock: other videos go on)."""
        with self._locks[index]:
            if index not in self._playable:
                video = self.session.videos[index]
                self._playable[index] = media.prepare(
                    video.media, video.fps, self.cache_dir, height=self.height,
                    progress=lambda done, total: self.progress.__setitem__(index, (done, total)))
            return self._playable[index]


class ReviewHandler(BaseHTTPRequestHandler):
    """One request; see the module docstring for the routes."""

    server: ReviewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log:
            sys.stderr.write(f"pespot review: {self.address_string()} {format % args}\n")

    # ---------------------------------------------------------------------------------------------- dispatch

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        if path in ("/", "/index.html"):
            page = (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace("{{TOKEN}}", self.server.token)
            self._send(HTTPStatus.OK, page.encode(), STATIC_TYPES[".html"])
        elif path.startswith("/static/"):
            file = self.server.static.get(path.removeprefix("/static/"))
            if file is None:
                self._error(HTTPStatus.NOT_FOUND, "not found")
            else:
                self._send(HTTPStatus.OK, file.read_bytes(), STATIC_TYPES.get(file.suffix, "application/octet-stream"))
        elif path.startswith("/media/"):
            if query.get("t", [""])[0] != self.server.token:
                self._error(HTTPStatus.FORBIDDEN, "missing or wrong token")
                return
            index = self._index(path.removeprefix("/media/").removesuffix(".mp4"))
            if index is not None:
                try:
                    playable = self.server.playable(index)
                except PespotError as err:
                    self._error(HTTPStatus.UNPROCESSABLE_ENTITY, str(err))
                    return
                self._send_file(playable.path)
        elif path.startswith("/api/"):
            if self._token_ok():
                self._api_get(path.removeprefix("/api/"))
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found")

    def do_POST(self) -> None:
        if not self._host_ok() or not self._token_ok():
            return
        if urlsplit(self.path).path != "/api/save":
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self._error(HTTPStatus.BAD_REQUEST, "expected a JSON body")
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError):
            self._error(HTTPStatus.BAD_REQUEST, "save: the body is not JSON")
            return
        try:
            result = self.server.session.save(payload)
        except Conflict as err:
            self._json(HTTPStatus.CONFLICT, {"error": str(err), "version": self.server.session.version})
            return
        except PespotError as err:
            self._error(HTTPStatus.BAD_REQUEST, str(err))
            return
        except OSError as err:  # a full disk, a read-only folder: the page says it, the server goes on
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"cannot write {err.filename or ''}: {err.strerror or err}")
            return
        print(f"saved version {result['version']}: {', '.join(result['written'])}", file=sys.stderr)
        self._json(HTTPStatus.OK, result)

    def _api_get(self, route: str) -> None:
        session = self.server.session
        if route == "state":
            state = session.state()
            state["threshold"] = self.server.threshold
            self._json(HTTPStatus.OK, state)
        elif route.startswith("scores/"):
            index = self._index(route.removeprefix("scores/"))
            if index is not None:
                if session.videos[index].scores is None:
                    self._error(HTTPStatus.NOT_FOUND, "no scores for this video")
                else:
                    self._send(HTTPStatus.OK, session.scores_bytes(index), "application/octet-stream")
        elif route.startswith("media/"):
            index = self._index(route.removeprefix("media/"))
            if index is not None:
                try:
                    playable = self.server.playable(index)
                except PespotError as err:
                    self._error(HTTPStatus.UNPROCESSABLE_ENTITY, str(err))
                    return
                self._json(HTTPStatus.OK, {
                    "url": f"/media/{index}.mp4?t={self.server.token}&k={playable.path.stem}",
                    "rate": [playable.rate.numerator, playable.rate.denominator],
                    "num_frames": playable.num_frames, "transcoded": playable.transcoded})
        elif route.startswith("progress/"):
            index = self._index(route.removeprefix("progress/"))
            if index is not None:
                done, total = self.server.progress.get(index, (0, 0))
                self._json(HTTPStatus.OK, {"done": done, "total": total})
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found")

    # ---------------------------------------------------------------------------------------------- checks

    def _host_ok(self) -> bool:
        if self.server.loopback:
            host = self.headers.get("Host") or ""
            name = host[: host.find("]") + 1] if host.startswith("[") else host.split(":")[0]
            if name not in LOOPBACK_NAMES:
                self._error(HTTPStatus.FORBIDDEN, "this server answers only to localhost names")
                return False
        return True

    def _token_ok(self) -> bool:
        if not secrets.compare_digest(self.headers.get("X-Pespot-Token") or "", self.server.token):
            self._error(HTTPStatus.FORBIDDEN, "missing or wrong token (reload the page)")
            return False
        return True

    def _index(self, text: str) -> int | None:
        if text.isdigit() and int(text) < len(self.server.session.videos):
            return int(text)
        self._error(HTTPStatus.NOT_FOUND, "no such video")
        return None

    # ---------------------------------------------------------------------------------------------- replies

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json(status, {"error": message})

    def _send_file(self, path: Path) -> None:
        """``path`` whole or one byte range of it (``Range: bytes=a-b``), as a ``<video>`` element asks."""
        size = path.stat().st_size
        start, end = 0, size - 1
        status = HTTPStatus.OK
        wanted = self.headers.get("Range")
        if wanted:
            m = _RANGE.match(wanted.strip())
            if m is None or (not m.group(1) and not m.group(2)):
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # the last N bytes
                start = max(0, size - int(m.group(2)))
            if start > end or start >= size:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        try:
            with open(path, "rb") as f:
                f.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = f.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser dropped a range it no longer needs (it does so on every seek)
