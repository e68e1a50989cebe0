"""FileTokenStore: one JSON file per scope in a private folder, shared by every process of the user.

Layout: ``<folder>/<MODE>-<key fingerprint>.json`` holds the token and the scope's issuance
ledger; ``<folder>/<MODE>-<key fingerprint>.lock`` is the per-scope lock (``flock``) under which
the token cache runs re-read -> re-check -> issue -> write, so N processes send one tokenP. The
lock file exists only while the lock is held: the holder unlinks it before letting go, and a
taker whose ``flock`` landed on a file that is no longer at the path starts again (see
:class:`_ScopeLock`). So no lock file is left behind by a clean release, and one left by a
holder that was killed (or by an older version) is removed by :meth:`FileTokenStore.tokens`
under the same rule: only while holding its ``flock``, so never while anyone holds it, and
anyone about to take it (it opened the file just before) is turned away and starts again.
(A process of an older version whose filelock lacks that check -- 3.20.x does; 4.3 has it --
sharing the folder could, in a window of microseconds, hold the lock beside another once.)

The scope's WebSocket approval key has its own file, ``<MODE>-<fingerprint>.approval.json``;
its one-session stream lease is ``<MODE>-<fingerprint>.stream.lock``, held with ``flock`` while
a session is open (the kernel releases it when the holder dies), with the holder's host and pid
in ``<MODE>-<fingerprint>.stream.json``; both go with the release, and a dead holder's are
swept like the issuance lock's. The call budget (:mod:`runtime.auth.call_budget.file`) locks
its ``*.budget.json`` state file itself and leaves no lock file.

Writes are atomic (temporary file in the same folder, fsync, ``os.replace``, fsync of the
folder): a reader sees the old file or the new one, never half of one, even if the writer is
killed. Every file is created 0600 and the folder 0700. Anything unreadable -- corrupt,
truncated, an unknown schema, another scope, a symlink, a file owned by someone else -- is a
miss with a warning that never shows the token, never an error and never a served bad token.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.auth.ports import IssuanceLedger, LeaseHolder
from runtime.auth.stores.bounds import seconds_left
from runtime.auth.stores.document import (
    MAX_DOCUMENT_BYTES,
    UnreadableEntry,
    approval_document,
    check_approval_scope,
    check_scope,
    empty_document,
    holder_document,
    holder_from_raw,
    iso_or_none,
    ledger_from_document,
    parse_approval_document,
    parse_document,
    read_token,
    session_held_error,
    token_to_json,
)
from runtime.broker.base import AccessToken, ApprovalKey, BrokerScope, Mode
from runtime.errors import TokenStoreError
from runtime.forksafe import renew_in_child

__all__ = ["FileTokenStore"]

_log = logging.getLogger(__name__)

_MAX_FILE_BYTES = MAX_DOCUMENT_BYTES  # a token file is well under 1 KiB; anything bigger is not ours
_NAME = re.compile(r"(VTS|REAL)-([0-9a-f]{12})\.(json|lock|stream\.lock)")
_WRITE_LOCK_TIMEOUT_S = 30.0
_LOCK_POLL_S = 0.005  # a waiting process asks again this often (a thread waits on the thread lock)
_OPEN_FLAGS = os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class FileTokenStore:
    """Tokens and issuance ledgers in ``folder``, one file per scope; see the module docstring.

    Implements TokenStorePort.
    Nothing touches the disk until the first call.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self._folder = Path(folder).expanduser()
        self._ready = False
        self._renew_locks()
        renew_in_child(self, FileTokenStore._renew_locks)

    def _renew_locks(self) -> None:
        # Fresh in a forked child too: another parent thread may have held the guard at fork().
        self._guard = threading.Lock()
        self._locks: dict[BrokerScope, _ScopeLock] = {}

    @property
    def folder(self) -> Path:
        """Where the files live."""
        return self._folder

    def path_for(self, scope: BrokerScope) -> Path:
        """The JSON file of ``scope``."""
        return self._folder / f"{scope.mode.value}-{scope.key_fingerprint}.json"

    # --- TokenStorePort ------------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """Always: every process of this user on this host sees the same entries."""
        return True

    def load(self, scope: BrokerScope) -> AccessToken | None:
        path = self.path_for(scope)
        raw = self._read_bytes(path)
        return _token_in(raw, path, scope) if raw is not None else None

    def save(self, scope: BrokerScope, token: AccessToken) -> None:
        check_scope(scope, token)
        with self._write_lock(scope):
            data = self._read(scope) or empty_document(scope)
            data["token"] = token_to_json(token)
            self._write(scope, data)

    def delete(self, scope: BrokerScope) -> None:
        with self._write_lock(scope):
            data = self._read(scope)
            if data is None or data.get("token") is None:
                return
            data["token"] = None
            self._write(scope, data)  # the ledger outlives the token: the budget still applies

    # --- ledger --------------------------------------------------------------------

    def load_ledger(self, scope: BrokerScope) -> IssuanceLedger:
        data = self._read(scope)
        return ledger_from_document(data) if data is not None else IssuanceLedger()

    def save_ledger(self, scope: BrokerScope, ledger: IssuanceLedger) -> None:
        with self._write_lock(scope):
            data = self._read(scope) or empty_document(scope)
            data["last_issued_at"] = iso_or_none(ledger.last_issued_at)
            data["blocked_until"] = iso_or_none(ledger.blocked_until)
            self._write(scope, data)

    # --- approval key -------------------------------------------------------------------

    def approval_path_for(self, scope: BrokerScope) -> Path:
        """The approval key's own file of ``scope``."""
        return self._folder / f"{scope.mode.value}-{scope.key_fingerprint}.approval.json"

    def load_approval(self, scope: BrokerScope) -> ApprovalKey | None:
        path = self.approval_path_for(scope)
        raw = self._read_bytes(path)
        if raw is None:
            return None
        try:
            return parse_approval_document(raw, scope)
        except UnreadableEntry as why:
            _log.warning("ignoring approval key file %s: %s", path, why)
            return None

    def save_approval(self, scope: BrokerScope, key: ApprovalKey) -> None:
        check_approval_scope(scope, key)
        self._write_path(self.approval_path_for(scope), approval_document(scope, key))

    def delete_approval(self, scope: BrokerScope) -> None:
        path = self.approval_path_for(scope)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise TokenStoreError(f"cannot delete {path}: {exc.strerror or exc}") from exc

    # --- stream lease ----------------------------------------------------------------------

    def acquire_stream_lease(self, scope: BrokerScope, holder: LeaseHolder) -> _FileLease:
        """``flock`` on ``<scope>.stream.lock`` without waiting; the holder's name in the sidecar."""
        self._prepare()
        base = f"{scope.mode.value}-{scope.key_fingerprint}.stream"
        lock_path, sidecar = self._folder / f"{base}.lock", self._folder / f"{base}.json"
        try:
            fd = _take_flock(lock_path, time.monotonic())  # one try, as _ScopeLock takes it
        except OSError as exc:
            raise TokenStoreError(f"cannot open or lock {lock_path}: {exc.strerror or exc}") from exc
        if fd is None:
            raise session_held_error(scope, self._holder_in(sidecar))
        try:
            self._write_path(sidecar, holder_document(holder))
        except TokenStoreError:
            _drop_flock(lock_path, fd)
            raise
        return _FileLease(fd, lock_path, sidecar, holder)

    def _holder_in(self, sidecar: Path) -> LeaseHolder | None:
        raw = self._read_bytes(sidecar)
        return holder_from_raw(raw) if raw is not None else None

    # --- lock ----------------------------------------------------------------------

    @contextlib.contextmanager
    def issuance_lock(self, scope: BrokerScope, timeout_s: float) -> Iterator[None]:
        """The scope's exclusive lock across processes (reentrant within one thread).

        Waits at most ``timeout_s``, and never past the current call's deadline."""
        lock = self._lock_for(scope)
        timeout_s = seconds_left(max(timeout_s, 0.0), "token lock")
        try:
            taken = lock.acquire(timeout_s)
        except OSError as exc:
            raise TokenStoreError(f"cannot lock {lock.path}: {exc.strerror or exc}") from exc
        if not taken:
            raise TokenStoreError(
                f"another process has held the token lock for {scope} for more than {timeout_s:g} s "
                f"({lock.path})"
            )
        try:
            yield
        finally:
            lock.release()

    # --- listing ----------------------------------------------------------------------

    def tokens(self) -> list[AccessToken]:
        """Every readable token in the folder, ordered by scope.

        One scan of the folder, one read per token file, no lock taken (writes are atomic
        renames). Lock files nobody holds are removed on the way (see the module docstring)."""
        if not self._folder_is_safe():
            return []
        try:
            names = os.listdir(self._folder)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise TokenStoreError(f"cannot list {self._folder}: {exc.strerror or exc}") from exc
        found: list[AccessToken] = []
        folder = str(self._folder)
        for match in filter(None, map(_NAME.fullmatch, names)):
            path = os.path.join(folder, match.group(0))  # a str: 1,000 Path objects cost more than the reads
            if match.group(3) != "json":
                _sweep_lock(Path(path))
                continue
            raw = _read_or_warn(path)
            token = _token_in(raw, path, BrokerScope(Mode(match.group(1)), match.group(2))) if raw else None
            if token is not None:
                found.append(token)
        return sorted(found, key=_scope_order)

    # --- the disk --------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Create the folder 0700 (or tighten a readable one) once; TokenStoreError if impossible
        or if the folder is not safe (see :meth:`_folder_is_safe`)."""
        with self._guard:
            if self._ready:
                return
            try:
                self._folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise TokenStoreError(
                    f"cannot create token folder {self._folder}: {exc.strerror or exc}"
                ) from exc
        self._folder_is_safe(tighten=True)

    def _folder_is_safe(self, *, tighten: bool = False) -> bool:
        """True when the folder exists and is ours alone; False when it does not exist yet.

        As ssh refuses a loose ``~/.ssh``: a folder owned by another user, or writable by
        others, is refused with TokenStoreError -- whoever can write there can plant a FIFO, a
        lock-file symlink or a token of their choosing. One readable by others is tightened
        before the first write (``tighten``); a read changes nothing."""
        if self._ready:
            return True
        try:
            info = os.stat(self._folder)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise TokenStoreError(
                f"cannot inspect token folder {self._folder}: {exc.strerror or exc}"
            ) from None
        if not stat.S_ISDIR(info.st_mode):
            raise TokenStoreError(f"token folder {self._folder} is not a folder; refusing to use it")
        problem = folder_problem(info.st_uid, info.st_mode)
        if problem is not None:
            raise TokenStoreError(
                f"refusing token folder {self._folder}: {problem}. Tokens there could be read, replaced "
                f"or planted by someone else; use a folder of your own (chmod 700 it), or set "
                f"QTS_TOKEN_STORE=file:PATH to another one"
            )
        if not tighten:
            return True
        if stat.S_IMODE(info.st_mode) & 0o077:
            try:
                os.chmod(self._folder, 0o700)
            except OSError as exc:
                raise TokenStoreError(f"cannot tighten token folder {self._folder}: {exc.strerror}") from None
            _log.warning("token folder %s was readable by others; tightened to 0700", self._folder)
        with self._guard:
            self._ready = True
        return True

    def _lock_for(self, scope: BrokerScope) -> _ScopeLock:
        self._prepare()
        with self._guard:
            lock = self._locks.get(scope)
            if lock is None:
                lock = self._locks[scope] = _ScopeLock(self.path_for(scope).with_suffix(".lock"))
            return lock

    @contextlib.contextmanager
    def _write_lock(self, scope: BrokerScope) -> Iterator[None]:
        # Read-modify-write of the token and the ledger must not interleave; reentrant, so a
        # save inside the cache's issuance lock does not wait for itself.
        with self.issuance_lock(scope, _WRITE_LOCK_TIMEOUT_S):
            yield

    def _read_bytes(self, path: Path) -> bytes | None:
        # Every read (token, approval key, lease holder) first checks the folder is ours alone.
        if not self._folder_is_safe():
            return None
        return _read_or_warn(path)

    def _read(self, scope: BrokerScope) -> dict[str, Any] | None:
        path = self.path_for(scope)
        raw = self._read_bytes(path)
        if raw is None:
            return None
        try:
            return parse_document(raw, scope)
        except UnreadableEntry as why:
            _log.warning("ignoring token file %s: %s", path, why)
            return None

    def _write(self, scope: BrokerScope, data: dict[str, Any]) -> None:
        self._write_path(self.path_for(scope), data)

    def _write_path(self, path: Path, data: dict[str, Any]) -> None:
        import tempfile  # here: a read (`qts status`) never pays for it

        self._prepare()
        payload = json.dumps(data, sort_keys=True, indent=1).encode("utf-8")
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self._folder)
        except OSError as exc:
            raise TokenStoreError(f"cannot write in {self._folder}: {exc.strerror or exc}") from exc
        try:
            with os.fdopen(fd, "wb") as handle:  # mkstemp created it 0600
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise TokenStoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
        _fsync_folder(self._folder)


def folder_problem(uid: int, mode: int) -> str | None:
    """Why a folder with owner ``uid`` and ``mode`` must not hold tokens, or None (pure)."""
    if uid != os.getuid():
        return f"it is owned by uid {uid}, not by this user (uid {os.getuid()})"
    if stat.S_IMODE(mode) & 0o022:
        return f"it is writable by other users (mode {stat.S_IMODE(mode):04o})"
    return None


class _FileLease:
    """A held ``flock``: released by :meth:`release` or by the kernel when the process dies."""

    def __init__(self, fd: int, lock_path: Path, sidecar: Path, holder: LeaseHolder) -> None:
        self._fd: int | None = fd
        self._lock_path = lock_path
        self._sidecar = sidecar
        self._holder = holder
        self._guard = threading.Lock()

    @property
    def holder(self) -> LeaseHolder:
        return self._holder

    @property
    def lost(self) -> bool:
        return False  # a flock cannot be taken from a living holder

    def release(self) -> None:
        with self._guard:
            fd, self._fd = self._fd, None
        if fd is None:
            return
        # The sidecar first: once the lock is free, the next holder writes its own. The lock file
        # goes too, as the issuance lock's does (see _ScopeLock): nothing is left behind.
        if holder_from_raw(_read_or_empty(self._sidecar)) == self._holder:
            with contextlib.suppress(OSError):
                self._sidecar.unlink()
        with contextlib.suppress(OSError):
            _drop_flock(self._lock_path, fd)


def _scope_order(token: AccessToken) -> tuple[str, str]:
    # BrokerScope's own order (mode, then fingerprint), without attrs' per-comparison tuples.
    return token.scope.mode.value, token.scope.key_fingerprint


def _read_or_warn(path: str | Path) -> bytes | None:
    """The bytes of ``path`` (see :func:`_read_private`); None, with a warning if it exists but
    cannot be used, otherwise."""
    try:
        return _read_private(path)
    except FileNotFoundError:
        return None
    except UnreadableEntry as why:
        _log.warning("ignoring token file %s: %s", path, why)
        return None
    except OSError as exc:
        _log.warning("ignoring token file %s: cannot read it (%s)", path, exc.strerror or exc)
        return None


def _token_in(raw: bytes, path: str | Path, scope: BrokerScope) -> AccessToken | None:
    try:
        return read_token(raw, scope)
    except UnreadableEntry as why:
        _log.warning("ignoring token file %s: %s", path, why)
        return None


class _ScopeLock:
    """One scope's issuance lock: a thread lock inside the process, ``flock`` across processes.

    Reentrant within a thread. The lock file exists only while the lock is held: :meth:`release`
    unlinks it before letting go, and :meth:`acquire` keeps a ``flock`` only if the file it
    locked is still the one at the path. Whoever unlinks the file holds its ``flock``, so a
    process that opened it just before is refused by that check and starts again: two holders
    never lock two different files under one name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._threads = threading.RLock()
        self._depth = 0  # guarded by _threads
        self._fd: int | None = None

    def acquire(self, timeout_s: float) -> bool:
        """True once held; False after ``timeout_s``; OSError if the path cannot be a lock."""
        ends = time.monotonic() + timeout_s
        if not self._threads.acquire(timeout=max(timeout_s, 0.0)):
            return False
        if self._depth == 0:
            try:
                self._fd = _take_flock(self.path, ends)
            except BaseException:
                self._threads.release()
                raise
            if self._fd is None:
                self._threads.release()
                return False
        self._depth += 1
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            fd, self._fd = self._fd, None
            if fd is not None:
                _drop_flock(self.path, fd)
        self._threads.release()


def _take_flock(path: Path, ends: float) -> int | None:
    """A descriptor holding ``flock`` on the file at ``path`` (created if missing), or None at ``ends``."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600)
        try:
            taken = _flock_regular(fd, path)
            if taken and _still_at(path, fd):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if not taken:  # held elsewhere: ask again soon (a file swept under us: at once)
            left = ends - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(_LOCK_POLL_S, left))


def _flock_regular(fd: int, path: Path) -> bool:
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device planted at the path
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _still_at(path: Path, fd: int) -> bool:
    """True when the file ``fd`` locked is the one at ``path`` (not unlinked, not replaced)."""
    held = os.fstat(fd)
    try:
        there = os.lstat(path)
    except FileNotFoundError:
        return False
    return held.st_nlink > 0 and (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


def _drop_flock(path: Path, fd: int) -> None:
    # Unlinked while still held: nobody can be holding it, and anyone about to take it is
    # turned away by _still_at. Unlocked explicitly: a forked child may share the descriptor.
    try:
        with contextlib.suppress(OSError):
            os.unlink(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _sweep_lock(path: Path) -> bool:
    """Remove the lock file at ``path`` if nobody holds it; True if removed. Never raises."""
    try:
        fd = os.open(path, os.O_RDWR | _OPEN_FLAGS)
    except OSError:
        return False
    try:
        free = _flock_regular(fd, path) and _still_at(path, fd)
    except OSError:
        free = False
    if not free:
        os.close(fd)
        return False
    if path.name.endswith(".stream.lock"):  # no session holds it: its holder's name is stale too
        with contextlib.suppress(OSError):
            os.unlink(path.with_suffix(".json"))
    with contextlib.suppress(OSError):
        _drop_flock(path, fd)
    return True


def _read_or_empty(path: Path) -> bytes:
    try:
        return _read_private(path)
    except (OSError, UnreadableEntry):
        return b""


def _read_private(path: str | Path) -> bytes:
    """The bytes of ``path`` if it is a regular file of ours, not a symlink, and not writable by others.

    Opened non-blocking and checked with fstat before any read: a FIFO (or a device) planted at
    the path is refused at once instead of blocking ``open()`` forever."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnreadableEntry("it is a symlink; token files are never followed through links") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableEntry("not a regular file")
        if info.st_uid != os.getuid():
            raise UnreadableEntry(f"owned by uid {info.st_uid}, not by this user")
        if stat.S_IMODE(info.st_mode) & 0o022:
            raise UnreadableEntry("writable by other users")
        if stat.S_IMODE(info.st_mode) & 0o044:
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o600)
            _log.warning("token file %s was readable by others; tightened to 0600", path)
        if info.st_size > _MAX_FILE_BYTES:
            raise UnreadableEntry(f"{info.st_size} bytes is far too large for a token file")
        return os.pread(fd, _MAX_FILE_BYTES + 1, 0)  # one read: a regular file of at most 64 KiB
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not every platform can open a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
