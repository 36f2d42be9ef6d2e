"""One connection to one libvirt URI: opening it (early, beside the spec loading), saying
why it could not be opened, and the two ways data moves: rounds of reads several at a time,
and volume content through streams.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import re
import sys
import threading
import urllib.parse
from typing import Any

import libvirt

from ..errors import HostError, HostUnavailable, InvalidRequest, PermissionDenied
from .errors import _PERMISSION_ERRNOS, translate, wrapped

_CHUNK = 256 * 1024

# one connection at a time unless told otherwise (max_client_requests in libvirtd.conf), so
# more threads only queue there, and each costs a tenth of a millisecond to start.
_READERS = 5
_FEW = 8  # a round of fewer calls is read one by one


class Connection:
    """One connection to one libvirt URI. Safe to share between executor threads."""

    def __init__(self, uri: str):
        self.uri = uri
        self._in_process = uri.startswith("test:")
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        self._readers: cf.ThreadPoolExecutor | None = None
        self._opening: tuple[threading.Thread, list] | None = None

    def connect_early(self) -> None:
        """Open the connection in the background.

        Called before the specs load, so that the two overlap. Nothing more happens in
        that thread: whatever it does after the open waits for the GIL until the specs
        are loaded (starting the reader threads there held up the first reads). A failure
        is kept for the first use of the connection, after the specs have been checked, so
        a spec error is still reported first and alone.
        """
        if self._conn is not None or self._opening is not None or self._in_process:
            return
        outcome: list = []
        thread = threading.Thread(target=self._open_early, args=(outcome,), name="reconcile-connect", daemon=True)
        self._opening = (thread, outcome)
        thread.start()

    def _open_early(self, outcome: list) -> None:
        try:
            conn = _open(self.uri)
        except libvirt.libvirtError as exc:
            outcome.append(exc)
            return
        with self._lock:
            if self._opening is None or self._opening[1] is not outcome:
                conn.close()  # closed (given up) meanwhile
                return
            self._conn = conn

    @property
    def conn(self) -> libvirt.virConnect:
        opening = self._opening
        if opening is not None:
            opening[0].join()
            self._opening = None
            if opening[1]:
                raise self._cannot_connect(opening[1][0])
        with self._lock:
            if self._conn is None:
                try:
                    self._conn = _open(self.uri)
                except libvirt.libvirtError as exc:
                    raise self._cannot_connect(exc) from exc
            return self._conn

    def _cannot_connect(self, exc: libvirt.libvirtError) -> HostError:
        """Why the connection could not be opened, said as what fits the cause: a URI
        libvirt does not take, a host that cannot be reached, a daemon that is not running
        here, or access refused."""
        subject, message = f"connect to {self.uri}", exc.get_error_message()
        parts = urllib.parse.urlsplit(self.uri)
        remote = "+" in parts.scheme and not parts.scheme.endswith(("+unix", "+ext")) or bool(parts.hostname)
        refused = (exc.get_error_code() == libvirt.VIR_ERR_SYSTEM_ERROR and exc.get_int1() in _PERMISSION_ERRNOS
                   or isinstance(translate(exc), PermissionDenied))  # the socket's mode, or polkit
        err: HostError
        if "://" not in self.uri or exc.get_error_code() in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INTERNAL_ERROR,
                                                             libvirt.VIR_ERR_INVALID_ARG):
            err = InvalidRequest(f"{message} (libvirt does not take this URI; expected one such as qemu:///system, "
                                 "qemu:///session or qemu+ssh://USER@HOST/system)", subject)
        elif refused:
            err = PermissionDenied(f"{message} (run as root, or as a member of the group that owns libvirtd's "
                                   "socket, often `libvirt`, or allow the user in polkit for "
                                   "org.libvirt.unix.manage)", subject)
        elif remote:
            err = HostUnavailable(f"{_one_line(message)} ({remote_hint(message, parts)})", subject)
        else:
            err = HostUnavailable(f"{message} (libvirtd does not answer on this machine: start it, e.g. "
                                  "`systemctl start libvirtd`, or `libvirtd -d` where there is no systemd)", subject)
        err.__cause__ = exc
        return err

    def reconnect(self) -> None:
        """Drop a connection that broke; the next call opens a new one."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

    def _reader_pool(self) -> cf.ThreadPoolExecutor:
        """The reader threads (see `_reads`); the caller holds `_lock`."""
        if self._readers is None:
            self._readers = cf.ThreadPoolExecutor(max_workers=_READERS - 1, thread_name_prefix="reconcile-read")
        return self._readers

    def close(self) -> None:
        """Close the connection. One still being opened early (the specs failed while a slow
        host was answering) is closed by its thread once open: the exit does not wait."""
        with self._lock:
            self._opening = None
            if self._readers is not None:
                self._readers.shutdown(wait=False)  # idle: its threads end on their own
                self._readers = None
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

    def _reads(self, calls: dict[Any, tuple]) -> dict[Any, Any]:
        """Each `key: (function, *args)` called, several at a time: the result or the
        libvirtError it raised, by key.

        One XML read per domain and per volume is the bulk of a plan's time, and libvirtd
        answers reads in parallel. The calls are dealt round-robin into up to `_READERS`
        shares, one of them read by this thread and each other by a reader thread, one
        after another: a task per call costs as much CPU again as the reads themselves.
        (Sixty XML reads of twenty running domains, here: 7.3 ms one by one, 4.3 ms in five
        shares, 4.1 ms in eight.) The threads make the calls and nothing else: parsing the
        answers there too would have them queue for the GIL. A round of a few calls (the
        listings) is quicker one by one than handed to threads, and an in-process driver
        (test:///) has no round trip to overlap: both read one by one.
        """
        items = list(calls.values())
        share = _call_each
        n = 1 if self._in_process or len(items) < _FEW else min(_READERS, len(items))
        if n < 2:
            return dict(zip(calls, share(items)))
        with self._lock:
            readers = self._reader_pool()
        others = [readers.submit(share, items[i::n]) for i in range(1, n)]
        results: list[list] = [share(items[0::n])] + [f.result() for f in others]
        ordered = [None] * len(items)
        for i, got in enumerate(results):
            ordered[i::n] = got
        return dict(zip(calls, ordered))

    @staticmethod
    def _one_by_one(calls: dict[Any, tuple]) -> dict[Any, Any]:
        """As `_reads`, but in turn on this thread (for streams: see `Observing._read_content`)."""
        return dict(zip(calls, _call_each(list(calls.values()))))

    def _send(self, vol: libvirt.virStorageVol, source, subject: str, offset: int = 0, length: int = 0) -> None:
        stream = self.conn.newStream(0)
        try:
            with wrapped(subject):
                vol.upload(stream, offset, length, 0)
                while True:
                    chunk = source.read(_CHUNK)
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        sent = stream.send(view.tobytes())
                        view = view[sent:]
                stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    def _download(self, vol: libvirt.virStorageVol, size: int, limit: int) -> bytes | None:
        if size > limit:
            return None
        stream = self.conn.newStream(0)
        chunks: list[bytes] = []
        try:
            vol.download(stream, 0, size, 0)
            while True:
                data = stream.recv(_CHUNK)
                if not data or isinstance(data, int):
                    break
                chunks.append(data)
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise
        return b"".join(chunks)


def _call_each(items: list[tuple]) -> list:
    """Each `(function, *args)` called in turn: its result, or the libvirtError it raised."""
    out = []
    for item in items:
        try:
            out.append(item[0](*item[1:]))
        except libvirt.libvirtError as exc:
            out.append(exc)
    return out


def _open(uri: str) -> libvirt.virConnect:
    """Open `uri`; a run nobody can answer (stdin is not a terminal: cron, a pipeline) never
    waits at a prompt. Then ssh runs in batch mode (`no_tty=1`: a host key, password or
    passphrase it would ask for fails at once, with ssh's reason), and every question
    libvirt's own transports ask (libssh, SASL) is answered with nothing."""
    if sys.stdin is not None and sys.stdin.isatty():
        return libvirt.open(uri)
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.endswith("+ssh") and "no_tty" not in urllib.parse.parse_qs(parts.query):
        uri = urllib.parse.urlunsplit(parts._replace(query=f"{parts.query}&no_tty=1" if parts.query else "no_tty=1"))
    creds = [libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE, libvirt.VIR_CRED_ECHOPROMPT,
             libvirt.VIR_CRED_NOECHOPROMPT, libvirt.VIR_CRED_REALM]
    return libvirt.openAuth(uri, [creds, _no_answers, None], 0)


def _no_answers(credentials, _data) -> int:
    return -1  # no one to ask: the open fails with the transport's reason


def _one_line(message: str) -> str:
    """ssh's own words, as libvirt passes them on, in one line (its banners span many)."""
    lines = [re.sub(r"@{3,}|^@|@$", "", ln.strip()).strip() for ln in message.replace("\r", "").split("\n")]
    return re.sub(r"\s+", " ", " ".join(ln for ln in lines if ln))


def remote_hint(message: str, parts: urllib.parse.SplitResult) -> str:
    """What to do about a remote host that could not be reached, by what ssh or the remote
    shell said: libvirt reports all of these as one error code, with their words inside, so
    the words are all there is to go by."""
    host = parts.hostname or "the host"
    port = parts.port or 22  # as ssh counts: the port of the other transports is set where they are named
    user = parts.username or "the user running reconcile"
    at = f"[{host}]:{port}" if parts.port else host
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in message:
        return (f"the host key {host} sends is not the one recorded for it in known_hosts: if {host} was "
                f"reinstalled, check its new key and replace the old one (ssh-keygen -R '{at}', then connect once "
                "with ssh to accept it); if not, someone may be in between: do not go on")
    if "Host key verification failed" in message:
        return (f"the host key of {host} is not known to this machine: check it and accept it once, with "
                f"`ssh -p {port} {user}@{host}` as the user running reconcile (or ssh-keyscan into known_hosts); "
                "reconcile never accepts an unknown host key by itself")
    if "Permission denied (" in message:
        return (f"{user}@{host} refused the login: put this machine's public key in that user's "
                "~/.ssh/authorized_keys, or name the right key with ?keyfile=PATH in the URI; a key with a "
                "passphrase needs an ssh-agent (SSH_AUTH_SOCK), and a password cannot be typed into a run that "
                "is not interactive")
    if "Connection refused" in message:
        ssh = "ssh" in parts.scheme
        port = parts.port or (22 if ssh else 16514 if "tls" in parts.scheme else 16509)
        server = "sshd" if ssh else "libvirtd (listening for remote connections)"
        return f"nothing listens on {host} port {port}: is {server} running there, and is that its port?"
    if "Could not resolve hostname" in message or "Name or service not known" in message:
        return f"{host} is not a name this machine can resolve: check the URI"
    if "virt-ssh-helper: not found" in message or "nc: not found" in message or ": not found" in message:
        return (f"{host} has neither virt-ssh-helper nor nc, through which libvirt reaches the daemon: install "
                "libvirt (libvirt-clients, or libvirt-daemon) there, or name a netcat with ?netcat=PATH")
    if "libvirt-sock" in message or "No such file or directory" in message:
        return (f"libvirtd does not run on {host} (its socket is missing): start it there (`systemctl start "
                "libvirtd`, or the modular virtqemud), or for /session check that the user may start one")
    if "timed out" in message or "No route to host" in message:
        return f"{host} does not answer: is it up, and reachable from here?"
    extra = ", that sshd runs there and this user's key is accepted" if "ssh" in parts.scheme else ""
    return f"cannot reach libvirtd on {host}: check the host name, that the host is up and runs libvirtd{extra}"
