"""Image sources, fast, against http servers on 127.0.0.1: the credentials of a URL go to
that URL only, a check reads headers only, and a broken response is said in words."""

from __future__ import annotations

import http.server
import threading

import pytest

from reconcile.apply import sources


class _Server:
    """One http server on loopback; `handle(handler)` answers each request."""

    def __init__(self, handle):
        self.seen: list[tuple[str, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                outer.seen.append((self.command, self.headers.get("Authorization")))
                handle(self)

            do_GET = do_HEAD = _any  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.server.server_address[1]}/{path}"

    def close(self) -> None:
        self.server.shutdown()


def _ok(handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "4")
    handler.send_header("ETag", '"' + "x" * 5000 + '"')
    handler.end_headers()
    if handler.command == "GET":
        handler.wfile.write(b"data")


def test_credentials_are_not_sent_on_to_where_a_redirect_points():
    elsewhere = _Server(_ok)

    def redirect(handler):
        handler.send_response(302)
        handler.send_header("Location", elsewhere.url("image"))
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    first = _Server(redirect)
    try:
        with sources.ImageSource(first.url("image", "lab:pa55word@")) as src:
            assert src.read() == b"data"
        stamp = sources.probe(first.url("image", "lab:pa55word@"), None, None)
    finally:
        first.close()
        elsewhere.close()
    assert all(auth and auth.startswith("Basic ") for _, auth in first.seen)
    assert [auth for _, auth in elsewhere.seen] == [None, None]
    assert [method for method, _ in elsewhere.seen] == ["GET", "HEAD"]
    assert stamp.etag.startswith("sha256:") and len(stamp.etag) == 71  # kilobytes, kept as a hash


def test_a_broken_response_is_said_in_words():
    def broken(handler):
        handler.wfile.write(b"this is not http\r\n\r\n")

    server = _Server(broken)
    try:
        with pytest.raises(sources.SourceError) as caught:
            sources.probe(server.url("image"), None, None)
    finally:
        server.close()
    assert str(caught.value).startswith(f"check {server.url('image')}: ")
