"""Where an image comes from: a local file or an http(s) URL, read as a stream.

The stream is read in chunks and handed to libvirt as it arrives (virStorageVolUpload), so
an image never needs room on the machine running reconcile and the libvirt host may be
remote. The SHA-256 is computed on the way through; a mismatch raises at the end of the
stream, before the upload is completed, so the caller can abort and leave nothing behind.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from typing import BinaryIO

from ..errors import ReconcileError
from ..model import SourceStamp, shown_source

CHUNK = 1024 * 1024
TIMEOUT = 60  # seconds without data before a download is given up


class SourceError(ReconcileError):
    """An image source that cannot be read, or whose content is not what the spec says."""


class ImageSource:
    """A readable image: `read(n)` returns chunks, then b'' once the content checked out."""

    def __init__(self, location: str, sha256: str | None = None):
        self.location = location
        self.shown = shown_source(location)
        self.expected = sha256.lower() if sha256 else None
        self.digest = hashlib.sha256()
        self.size: int | None = None
        self.done = 0
        self._fp: BinaryIO | None = None
        self._mark = SourceStamp()  # what the file or the server says of this version
        self._errors: tuple[type[BaseException], ...] = (OSError,)  # what reading it may raise

    def __enter__(self) -> ImageSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if "://" in self.location:
            response = _open_url(self.location, "GET", "download")
            length = response.headers.get("Content-Length")
            self.size = int(length) if length and length.isdigit() else None
            self._mark = _from_headers(response.headers)
            self._fp = response
            import http.client  # loaded with urllib.request by _open_url

            self._errors = (OSError, http.client.HTTPException)  # a body cut short: IncompleteRead
        else:
            try:
                self._fp = open(self.location, "rb")  # noqa: SIM115 (closed by close())
                st = os.fstat(self._fp.fileno())
                self.size = st.st_size
                self._mark = SourceStamp(size=st.st_size, mtime_ns=st.st_mtime_ns)
            except OSError as exc:
                raise SourceError(f"read {self.shown}: {exc.strerror or exc}") from exc

    def read(self, n: int = CHUNK) -> bytes:
        assert self._fp is not None, "open() first"
        try:
            data = self._fp.read(n)
        except self._errors as exc:
            raise SourceError(f"read {self.shown}: {str(exc) or type(exc).__name__}") from exc
        if data:
            self.digest.update(data)
            self.done += len(data)
            return data
        if self.size is not None and self.done != self.size:
            raise SourceError(f"{self.shown}: ended after {self.done} of {self.size} bytes")
        if self.expected and self.digest.hexdigest() != self.expected:
            raise SourceError(f"{self.shown}: sha256 is {self.digest.hexdigest()}, the spec says {self.expected}; "
                              "the image was not imported (check the URL or the checksum)")
        return b""

    def stamp(self) -> SourceStamp:
        """The stamp of the version read, once it was read whole: recorded beside the image."""
        return dataclasses.replace(self._mark, size=self.done, sha256=self.digest.hexdigest())

    def close(self) -> None:
        if self._fp is not None:
            self._fp.close()
            self._fp = None


def _open_url(location: str, method: str, doing: str):
    """The response to an http(s) request for `location`; SourceError, in words, when there
    is none. urllib.request (http.client, ssl, email) is imported here: it is a sixth of the
    start-up time of every run, and only a download or a check needs it."""
    shown = shown_source(location)
    if not location.startswith(("http://", "https://")):
        raise SourceError(f"{shown}: only http and https URLs can be imported")
    import http.client
    import urllib.error
    import urllib.request

    class KeepHead(urllib.request.HTTPRedirectHandler):
        """A check stays a check where a mirror redirects it (urllib would follow with a GET)."""

        def redirect_request(self, req, fp, code, msg, headers, newurl):
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and req.get_method() == "HEAD":
                new.method = "HEAD"
            return new

    try:
        return urllib.request.build_opener(KeepHead).open(_request(location, method), timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"{doing} {shown}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        raise SourceError(f"{doing} {shown}: {reason}") from exc


def _request(location: str, method: str = "GET"):
    """The request for an http(s) source: user:password@ in the URL becomes basic
    authentication (urllib would take it for part of the host name), never shown."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(location)
    headers = {"User-Agent": "reconcile"}
    url = location
    auth = None
    if parts.username is not None:
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(token.encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    request = urllib.request.Request(url, headers=headers, method=method)
    if auth is not None:  # for this URL only: never sent on to where a redirect points
        request.add_unredirected_header("Authorization", auth)
    return request


MAX_MARK = 200  # an ETag longer than this (servers send kilobytes) is kept as its hash


def _from_headers(headers) -> SourceStamp:
    length = headers.get("Content-Length")
    return SourceStamp(size=int(length) if length and length.isdigit() else None,
                       etag=_short(headers.get("ETag")), last_modified=_short(headers.get("Last-Modified")))


def _short(mark: str | None) -> str | None:
    if not mark or len(mark) <= MAX_MARK:
        return mark or None
    return "sha256:" + hashlib.sha256(mark.encode()).hexdigest()


def probe(location: str, sha256: str | None, known: SourceStamp | None) -> SourceStamp:
    """What the source is now, reading as little as it can: the sha256 the spec gives; a
    file's size and modification time, and its content hash only when they differ from
    `known` (the record of the version imported last); a URL's ETag and Last-Modified, from
    a HEAD request. Raises SourceError when the source cannot be read, or when a URL says
    nothing that tells versions apart (then the spec must give its sha256)."""
    shown = shown_source(location)
    if sha256:
        return SourceStamp(sha256=sha256.lower())
    if "://" not in location:
        try:
            st = os.stat(location)
        except OSError as exc:
            raise SourceError(f"read {shown}: {exc.strerror or exc}") from exc
        if known is not None and known.sha256 and (known.size, known.mtime_ns) == (st.st_size, st.st_mtime_ns):
            return SourceStamp(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=known.sha256)
        with ImageSource(location) as src:
            while src.read():
                pass
            return src.stamp()
    with _open_url(location, "HEAD", "check") as response:
        stamp = _from_headers(response.headers)
    if not (stamp.etag or stamp.last_modified):
        raise SourceError(f"{shown}: the server sends neither an ETag nor a Last-Modified, so a change cannot be told "
                          "without downloading it; give the image's sha256 in the spec")
    return stamp
