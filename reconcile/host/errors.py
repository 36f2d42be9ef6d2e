"""libvirt's errors as reconcile's own kinds, at the edge: a `libvirtError` never leaves
this package. The original is kept as the cause, and libvirt's own words in the message.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterator
from typing import TypeVar

import libvirt

from ..errors import ConnectionLost, Conflict, HostError, InvalidRequest, NotFound, PermissionDenied

# libvirt prints every error to stderr by default; we report them ourselves.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_NOT_FOUND = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_NO_STORAGE_VOL,
              libvirt.VIR_ERR_NO_NETWORK}
_CONFLICT = {libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_DOM_EXIST, libvirt.VIR_ERR_STORAGE_VOL_EXIST,
             libvirt.VIR_ERR_STORAGE_POOL_BUILT, libvirt.VIR_ERR_OPERATION_FAILED}
# The connection itself failed ("client socket is closed", "Cannot recv data"): from the
# RPC layer whatever the code, or one of these codes.
_CONNECTION = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_INVALID_CONN}
_PERMISSION = {libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_OPERATION_DENIED, libvirt.VIR_ERR_AUTH_CANCELLED,
               libvirt.VIR_ERR_ACCESS_DENIED}
_INVALID = {libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_ERR_INVALID_ARG,
            libvirt.VIR_ERR_XML_DETAIL, libvirt.VIR_ERR_OPERATION_UNSUPPORTED, libvirt.VIR_ERR_INTERNAL_ERROR,
            libvirt.VIR_ERR_NO_SUPPORT}
# A system call in libvirtd failed with this errno (libvirt passes it along as int1): the
# kernel asks to try again. Seen in CI as "failed to load cgroup BPF prog: Resource
# temporarily unavailable" when starting a domain while others were being torn down.
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EINTR}
_PERMISSION_ERRNOS = {errno.EACCES, errno.EPERM}


def missing_file(exc: libvirt.libvirtError) -> bool:
    """Whether libvirtd failed because a file or directory it needed is not there (a system
    call answered ENOENT): starting a directory pool whose directory is missing."""
    return exc.get_error_code() == libvirt.VIR_ERR_SYSTEM_ERROR and exc.get_int1() == errno.ENOENT


def translate(exc: libvirt.libvirtError, subject: str = "") -> HostError:
    """A libvirtError as one of our kinds, keeping libvirt's own words in the message."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    transient = False
    if exc.get_error_domain() == libvirt.VIR_FROM_RPC or code in _CONNECTION:
        cls: type[HostError] = ConnectionLost
        message = f"lost the connection to libvirtd ({message})"
    elif code == libvirt.VIR_ERR_SYSTEM_ERROR:
        # A system call in libvirtd failed; the connection is fine and the errno says more.
        number = exc.get_int1()
        cls = PermissionDenied if number in _PERMISSION_ERRNOS else HostError
        transient = number in _TRANSIENT_ERRNOS
    elif code in _NOT_FOUND:
        cls = NotFound
    elif code in _PERMISSION:
        cls = PermissionDenied
    elif code in _CONFLICT:
        cls = Conflict
    elif code in _INVALID:
        cls = InvalidRequest
    else:
        cls = HostError
    err = cls(message, subject, transient=transient)
    err.__cause__ = exc
    return err


@contextlib.contextmanager
def wrapped(subject: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(exc, subject) from exc


T = TypeVar("T")


def lookup(find: Callable[[], T], missing: int, subject: str) -> T | None:
    """`find()`, or None when libvirt says there is no such object (error code `missing`)."""
    try:
        return find()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == missing:
            return None
        raise translate(exc, subject) from exc
