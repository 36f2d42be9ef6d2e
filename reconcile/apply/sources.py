"""Where an image comes from: a local file or an http(s) URL, read as a stream.

The stream is read in chunks and handed to libvirt as it arrives (virStorageVolUpload), so
an image never needs room on the machine running reconcile and the libvirt host may be
remote. The SHA-256 is computed on the way through; a mismatch raises at the end of the
stream, before the upload is completed, so the caller can abort and leave nothing behind.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import BinaryIO

from ..errors import ReconcileError
from ..model import shown_source

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

    def __enter__(self) -> ImageSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if "://" in self.location:
            if not self.location.startswith(("http://", "https://")):
                raise SourceError(f"{self.shown}: only http and https URLs can be imported")
            # imported here: urllib.request (http.client, ssl, email) is a sixth of the start-up
            # time of every run, and only a download needs it
            import urllib.error
            import urllib.request

            # user:password@ in the URL becomes basic authentication (urllib would take it for
            # part of the host name), and is never shown in a message.
            parts = urllib.parse.urlsplit(self.location)
            headers = {"User-Agent": "reconcile"}
            url = self.location
            if parts.username is not None:
                token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
                headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
                url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
            request = urllib.request.Request(url, headers=headers)
            try:
                response = urllib.request.urlopen(request, timeout=TIMEOUT)  # noqa: S310 (scheme checked above)
            except urllib.error.HTTPError as exc:
                raise SourceError(f"download {self.shown}: HTTP {exc.code} {exc.reason}") from exc
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise SourceError(f"download {self.shown}: {reason}") from exc
            length = response.headers.get("Content-Length")
            self.size = int(length) if length and length.isdigit() else None
            self._fp = response
        else:
            try:
                self._fp = open(self.location, "rb")  # noqa: SIM115 (closed by close())
                self.size = os.fstat(self._fp.fileno()).st_size
            except OSError as exc:
                raise SourceError(f"read {self.shown}: {exc.strerror or exc}") from exc

    def read(self, n: int = CHUNK) -> bytes:
        assert self._fp is not None, "open() first"
        try:
            data = self._fp.read(n)
        except OSError as exc:
            raise SourceError(f"read {self.shown}: {exc}") from exc
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

    def close(self) -> None:
        if self._fp is not None:
            self._fp.close()
            self._fp = None
