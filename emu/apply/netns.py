"""Network namespaces: create, enter and remove them without a fork, and without touching the root namespace.

`ip netns add` works by creating an empty file under /run/netns, unsharing a new network namespace and
bind-mounting /proc/self/ns/net onto that file.  We do the same from a short-lived thread: `unshare(CLONE_NEWNET)`
and `setns()` change only the calling thread, so the process (and every other thread) stays in the namespace it
started in.  This is the approach CNI's pkg/ns README describes; it avoids pyroute2's fork per socket (~12 ms).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]

T = TypeVar("T")
_rundir_ready = False
_rundir_lock = threading.Lock()


def _check(ret: int, what: str, name: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", name)


def path(name: str) -> str:
    """/run/netns/<name>; a name that is not one file name there (a '/', '.', '..', NUL, over NAME_MAX) is a bug or
    a tampered record, and never becomes a path (remove() unmounts and unlinks what this returns)."""
    if not name or name in (".", "..") or "/" in name or "\0" in name or len(name.encode()) > 255:
        raise ValueError(f"not a network namespace name: {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def list_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def _prepare_rundir() -> None:
    """Make /run/netns a shared mount point, exactly as iproute2's netns_add does."""
    global _rundir_ready
    with _rundir_lock:
        if _rundir_ready:
            return
        os.makedirs(NETNS_RUN_DIR, exist_ok=True)
        d = NETNS_RUN_DIR.encode()
        if _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
            _check(_libc.mount(d, d, b"none", MS_BIND | MS_REC, None), "bind /run/netns", NETNS_RUN_DIR)
            _check(_libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None), "share /run/netns", NETNS_RUN_DIR)
        _rundir_ready = True


def _in_thread(fn: Callable[[], T]) -> T:
    """Run fn in a fresh thread and return its result; the thread's namespace changes die with it."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["v"] = fn()
        except BaseException as e:  # re-raised in the caller
            box["e"] = e

    t = threading.Thread(target=run, name="emu-netns")
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]  # type: ignore[misc]
    return box["v"]  # type: ignore[return-value]


def create_many(names: list[str], on_each: Callable[[str], None] | None = None) -> None:
    """Create named namespaces.  One thread unshares once per namespace and pins each with a bind mount.

    Raises FileExistsError if a name is taken: a namespace we did not make is never reused.
    """
    if not names:
        return
    _prepare_rundir()

    def work() -> None:
        for name in names:
            p = path(name)
            fd = os.open(p, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
            os.close(fd)
            try:
                _check(_libc.unshare(CLONE_NEWNET), "unshare", name)
                tid = threading.get_native_id()
                src = f"/proc/self/task/{tid}/ns/net".encode()
                _check(_libc.mount(src, p.encode(), b"none", MS_BIND, None), "bind netns", name)
            except BaseException:
                _unlink_quiet(p)
                raise
            if on_each:
                on_each(name)

    # The thread ends inside the last namespace it unshared; the process's other threads never moved.
    _in_thread(work)


def create(name: str) -> None:
    create_many([name])


def _unlink_quiet(p: str) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def remove(name: str) -> bool:
    """Remove a namespace the way `ip netns del` does; returns False if it was already gone (idempotent)."""
    p = path(name)
    if not os.path.exists(p):
        return False
    if _libc.umount2(p.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, os.strerror(err), name)
    _unlink_quiet(p)
    return True


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Move the *calling thread* into namespace `name` for the block, then back.

    Only for threads that do nothing else meanwhile (a worker thread); never use it on the main thread of a
    process that also runs an event loop.
    """
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    target = os.open(path(name), os.O_RDONLY)
    try:
        _check(_libc.setns(target, CLONE_NEWNET), "setns", name)
        try:
            yield
        finally:
            _check(_libc.setns(own, CLONE_NEWNET), "setns back", name)
    finally:
        os.close(target)
        os.close(own)


def run_in(name: str, fn: Callable[[], T]) -> T:
    """Run fn inside namespace `name` on a throw-away thread (safe from any thread, also the main one)."""

    def work() -> T:
        fd = os.open(path(name), os.O_RDONLY)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), "setns", name)
        finally:
            os.close(fd)
        return fn()

    return _in_thread(work)


def each(names: list[str], fn: Callable[[str], T]) -> list[T]:
    """Run fn(name) inside each namespace in turn on ONE throw-away thread (a setns per namespace instead of a
    thread per namespace)."""

    def work() -> list[T]:
        out = []
        for name in names:
            fd = os.open(path(name), os.O_RDONLY)
            try:
                _check(_libc.setns(fd, CLONE_NEWNET), "setns", name)
            finally:
                os.close(fd)
            out.append(fn(name))
        return out

    return _in_thread(work) if names else []


def socket_in(name: str, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket that lives in namespace `name`: sockets keep the namespace they were created in."""
    return run_in(name, lambda: socket.socket(family, type_, proto))


def sockets_in(name: str, specs: list[tuple[int, int, int]]) -> list[socket.socket]:
    return run_in(name, lambda: [socket.socket(f, t, p) for f, t, p in specs])
