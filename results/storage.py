"""Where a run's files live: a local folder or a URI (`file://`, `s3://bucket/prefix`, `gs://...`),
behind one small interface that `RunDirectory` uses for every read and write.

- `LocalStorage`: files in a folder; a write goes to a temporary file that `os.replace` moves into
  place, so a reader never sees half a file.
- `ArrowStorage`: any pyarrow filesystem (S3 and S3-compatible servers through
  `?endpoint_override=host:port&scheme=http`, GCS, ...). An object store has no rename, but a PUT
  of a whole object is atomic, which is all a record needs. Every call is retried with backoff
  before a `StorageError` says what failed where.
- `SpooledStorage`: what the search driver writes a remote run through. Every write lands in a
  local spool first and leaves it once uploaded; after a failed upload the store is marked failed
  and later writes only spool, so the driver can stop cleanly and `drain` (run first by a resumed
  search) uploads what was left. What it wrote it reads back from memory: it is the run's only
  writer.

A URI never carries credentials (refused: they would end up in Ray's state and in logs); they come
from the environment or the provider's usual files. `display_uri` is what is printed and recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

RETRY_DELAYS_S = (1.0, 3.0)  # waits between attempts of a remote call (pyarrow retries inside too)
SECRET_QUERY_KEYS = ("access_key", "secret_key", "session_token", "token", "password",
                     "credentials", "sas_token", "account_key")
CACHE_ENV = "HYBRID_NAS_RUN_CACHE"  # where runs at a URI keep their local spool and study copy
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class StorageError(OSError):
    """The run storage cannot be reached, read or written; the message names the URI (without
    credentials) and says what failed, on one line."""


def is_uri(location: str | Path) -> bool:
    """A `scheme://...` location (a plain path, `Path` or not, is not one)."""
    return isinstance(location, str) and bool(_SCHEME.match(location))


def display_uri(uri: str) -> str:
    """`uri` with any user:password and secret query values removed: safe to print and record."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    query = urlencode([(k, "***" if k.lower() in SECRET_QUERY_KEYS else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe=":/")
    return urlunsplit((parts.scheme, host, parts.path, query, parts.fragment))


def check_no_credentials(uri: str) -> None:
    """Refuse a URI that carries credentials (they would be written into the run and Ray's state)."""
    parts = urlsplit(uri)
    secret = [k for k, _ in parse_qsl(parts.query) if k.lower() in SECRET_QUERY_KEYS]
    if parts.username or parts.password or secret:
        raise ValueError(
            f"{display_uri(uri)}: a storage URI must not carry credentials (they would be "
            "recorded in the run and in Ray's state); give them through the environment (e.g. "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) or the provider's credentials file")


def join(location: str | Path, *names: str) -> str | Path:
    """`location`/names for a path or a URI (the query of a URI stays at its end; '..' of a
    relative name is resolved in a URI)."""
    if not is_uri(location):
        return Path(location).joinpath(*names)
    parts = urlsplit(str(location))
    path = posixpath.normpath(posixpath.join(parts.path.rstrip("/") or "/", *names))
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def split(location: str | Path) -> tuple[str | Path, str]:
    """(parent location, last name) of a path or a URI."""
    if not is_uri(location):
        return Path(location).parent, Path(location).name
    parts = urlsplit(str(location))
    parent, name = posixpath.split(parts.path.rstrip("/"))
    return urlunsplit((parts.scheme, parts.netloc, parent, parts.query, parts.fragment)), name


def open_storage(location: str | Path) -> "Storage":
    """The storage for a local path, a `file://` URI or any URI pyarrow opens (s3://, gs://, ...).
    ValueError for a URI with credentials or one pyarrow cannot open."""
    if not is_uri(location):
        return LocalStorage(Path(location))
    uri = str(location)
    check_no_credentials(uri)
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return LocalStorage(Path(parts.path))
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{display_uri(uri)}: not a storage URI pyarrow can open: "
                         f"{one_line(exc)}") from None
    return ArrowStorage(fs, path.rstrip("/"), display_uri(uri).rstrip("/"))


def cache_dir(uri: str) -> Path:
    """This machine's folder for a run at `uri` ($HYBRID_NAS_RUN_CACHE, else
    ~/.cache/hybrid-nas/runs), one per URI: the spool and the study's local copy live there."""
    root = os.environ.get(CACHE_ENV) or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hybrid-nas" / "runs"
    name = posixpath.basename(urlsplit(uri).path.rstrip("/")) or "run"
    digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:12]
    return Path(root) / f"{name}-{digest}"


def one_line(exc: BaseException) -> str:
    """An exception as one line: pyarrow's multi-line AWS messages, request ids dropped."""
    text = " ".join(str(exc).split())
    return re.sub(r"\s*\(Request ID: [^)]*\)", "", text) or type(exc).__name__


class Storage(ABC):
    """The files of one run: names are relative, '/'-separated paths ('trials/t1.json')."""

    uri: str  # where it is, as printed and recorded (no credentials)

    @property
    def local_root(self) -> Path | None:
        """The folder on this machine, or None for a remote store."""
        return None

    def location(self, name: str = "") -> str | Path:
        """Where `name` is: a Path for local storage, a URI otherwise."""
        return join(self.uri, name) if name else self.uri

    @abstractmethod
    def read_bytes(self, name: str) -> bytes:
        raise NotImplementedError

    @abstractmethod
    def write_bytes(self, name: str, data: bytes) -> None:
        """Replace `name` whole, atomically (a reader sees the old or the new content)."""
        raise NotImplementedError

    def read_many(self, names: list[str]) -> dict[str, bytes]:
        """Several files at once (an object store reads them in parallel); missing ones are left
        out."""
        found = {}
        for name in names:
            try:
                found[name] = self.read_bytes(name)
            except FileNotFoundError:
                continue
        return found

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8")

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode("utf-8"))

    @abstractmethod
    def exists(self, name: str) -> bool:
        raise NotImplementedError

    @abstractmethod
    def list_files(self, folder: str) -> list[str]:
        """Names of the files directly in `folder` (none if it does not exist), sorted."""
        raise NotImplementedError

    @abstractmethod
    def is_empty(self) -> bool:
        """Does nothing exist at this location yet?"""
        raise NotImplementedError

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove a file (nothing happens if it is absent)."""
        raise NotImplementedError

    @abstractmethod
    def delete_folder(self, folder: str) -> None:
        raise NotImplementedError

    def upload(self, name: str, source: Path) -> None:
        """Copy a local file in as `name`, atomically."""
        self.write_bytes(name, Path(source).read_bytes())

    def download(self, name: str, target: Path) -> None:
        """Copy `name` to a local file."""
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.read_bytes(name))

    def copy_in(self, name: str, filesystem: Any, path: str) -> None:
        """Copy a file from a pyarrow filesystem (e.g. where Ray Tune put a checkpoint) in as
        `name`; a server-side copy when it is this storage's own filesystem."""
        with filesystem.open_input_stream(path) as f:
            self.write_bytes(name, f.read())

    @abstractmethod
    def probe(self) -> None:
        """Write, read back and delete a small marker; StorageError saying why if that fails."""
        raise NotImplementedError

    @abstractmethod
    def ray_storage(self, name: str) -> tuple[str, Any]:
        """(storage_path, storage_filesystem) for Ray Tune's RunConfig to keep `name` here."""
        raise NotImplementedError

    def healthy(self) -> bool:
        """Can the store be written right now?"""
        return True

    def raise_if_failed(self) -> None:
        """Raise the StorageError of a write that could not be uploaded (remote writers only)."""

    def drain(self) -> int:
        """Upload what an earlier failure left in the spool; the number of files (0 here)."""
        return 0

    def discard_spool(self) -> None:
        """Forget what an earlier run at this location left unuploaded (a new run starts clean)."""


class LocalStorage(Storage):
    """A folder on this machine (today's run directories)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.uri = str(self.root)

    def __repr__(self) -> str:
        return f"LocalStorage({self.uri!r})"

    @property
    def local_root(self) -> Path:
        return self.root

    def location(self, name: str = "") -> Path:
        return self.root / name if name else self.root

    def read_bytes(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def write_bytes(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def list_files(self, folder: str) -> list[str]:
        path = self.root / folder
        if not path.is_dir():
            return []
        return sorted(f"{folder}/{p.name}" if folder else p.name
                      for p in path.iterdir() if p.is_file())

    def is_empty(self) -> bool:
        return not self.root.exists() or not any(
            not p.name.startswith(".") for p in self.root.iterdir())

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def delete_folder(self, folder: str) -> None:
        shutil.rmtree(self.root / folder, ignore_errors=True)

    def upload(self, name: str, source: Path) -> None:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            shutil.copyfile(source, partial)
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def download(self, name: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.root / name, target)

    def probe(self) -> None:
        """Without leaving anything behind: the nearest existing folder must be writable."""
        folder = self.root
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise StorageError(f"{self.root}: cannot create the run directory here "
                               f"({folder} is not a writable folder)")

    def ray_storage(self, name: str) -> tuple[str, None]:
        return str(self.root / name), None


class ArrowStorage(Storage):
    """A prefix of a pyarrow filesystem (`base` is the filesystem path, `uri` what to print)."""

    def __init__(self, fs: Any, base: str, uri: str):
        self.fs = fs
        self.base = base
        self.uri = uri

    def __repr__(self) -> str:
        return f"ArrowStorage({self.uri!r})"

    def __reduce__(self):  # what Ray pickles: the URI, never the filesystem's live state
        return open_storage, (self.uri,)

    def path(self, name: str) -> str:
        return f"{self.base}/{name}" if name else self.base

    def read_bytes(self, name: str) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(self.path(name)) as f:
                return f.read()
        return self._retrying(f"reading {name}", read)

    def read_many(self, names: list[str]) -> dict[str, bytes]:
        from concurrent.futures import ThreadPoolExecutor

        def read(name: str) -> bytes | None:
            try:
                return self.read_bytes(name)
            except FileNotFoundError:
                return None

        with ThreadPoolExecutor(max_workers=min(16, max(1, len(names)))) as pool:
            found = dict(zip(names, pool.map(read, names)))
        return {name: data for name, data in found.items() if data is not None}

    def write_bytes(self, name: str, data: bytes) -> None:
        def write() -> None:
            if self.fs.type_name not in ("s3", "gcs"):  # object stores need no folders
                self.fs.create_dir(posixpath.dirname(self.path(name)), recursive=True)
            with self.fs.open_output_stream(self.path(name)) as f:
                f.write(data)
        self._retrying(f"writing {name}", write)

    def exists(self, name: str) -> bool:
        import pyarrow.fs

        info = self._retrying(f"looking up {name}", lambda: self.fs.get_file_info(self.path(name)))
        return info.type == pyarrow.fs.FileType.File

    def list_files(self, folder: str) -> list[str]:
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(self.path(folder), allow_not_found=True)
        infos = self._retrying(f"listing {folder or '/'}", lambda: self.fs.get_file_info(selector))
        start = len(self.base) + 1
        return sorted(info.path[start:] for info in infos if info.type == pyarrow.fs.FileType.File)

    def is_empty(self) -> bool:
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(self.base, allow_not_found=True)
        return not self._retrying("listing the run", lambda: self.fs.get_file_info(selector))

    def delete(self, name: str) -> None:
        def delete() -> None:
            try:
                self.fs.delete_file(self.path(name))
            except FileNotFoundError:
                pass
        self._retrying(f"deleting {name}", delete)

    def delete_folder(self, folder: str) -> None:
        self._retrying(f"deleting {folder}/", lambda: self.fs.delete_dir_contents(
            self.path(folder), missing_dir_ok=True))

    def copy_in(self, name: str, filesystem: Any, path: str) -> None:
        if filesystem is self.fs or filesystem.equals(self.fs):
            self._retrying(f"copying {name}", lambda: self.fs.copy_file(path, self.path(name)))
        else:
            super().copy_in(name, filesystem, path)

    def probe(self) -> None:
        marker = f".probe-{uuid.uuid4().hex}"
        try:
            with self.fs.open_output_stream(self.path(marker)) as f:
                f.write(marker.encode())
            with self.fs.open_input_stream(self.path(marker)) as f:
                back = f.read()
            self.fs.delete_file(self.path(marker))
        except (OSError, ValueError) as exc:
            raise StorageError(f"{self.uri}: cannot use this run storage (writing, reading back "
                               f"and deleting a marker failed): {one_line(exc)}") from None
        if back != marker.encode():
            raise StorageError(f"{self.uri}: a marker written to the run storage read back "
                               "different bytes")

    def ray_storage(self, name: str) -> tuple[str, Any]:
        return self.path(name), self.fs

    def healthy(self) -> bool:
        try:
            self.probe()
        except StorageError:
            return False
        return True

    def _retrying(self, what: str, call):
        for attempt, delay in enumerate((*RETRY_DELAYS_S, None), start=1):
            try:
                return call()
            except FileNotFoundError:
                raise
            except OSError as exc:
                if delay is None:
                    raise StorageError(f"{self.uri}: {what} failed after {attempt} attempt(s): "
                                       f"{one_line(exc)}") from None
                time.sleep(delay)


class SpooledStorage(Storage):
    """A remote storage as its one writer (the search driver) sees it: each write is spooled
    locally, uploaded, then dropped from the spool; a failed upload marks the store failed and
    keeps the file for `drain`. Reads of what it wrote come from memory."""

    COPIES = ".copies"  # pending server-side copies (name -> source path), kept in the spool

    def __init__(self, remote: ArrowStorage, spool: Path):
        self.remote = remote
        self.uri = remote.uri
        self.spool = spool
        self.failure: StorageError | None = None
        self._known: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"SpooledStorage({self.uri!r}, spool={str(self.spool)!r})"

    def __reduce__(self):
        return open_storage, (self.uri,)

    def read_bytes(self, name: str) -> bytes:
        if name not in self._known:
            self._known[name] = self._remote(lambda: self.remote.read_bytes(name))
        return self._known[name]

    def read_many(self, names: list[str]) -> dict[str, bytes]:
        unknown = [name for name in names if name not in self._known]
        if unknown:
            self._known.update(self._remote(lambda: self.remote.read_many(unknown)))
        return {name: self._known[name] for name in names if name in self._known}

    def write_bytes(self, name: str, data: bytes) -> None:
        self._known[name] = data
        spooled = self.spool / name
        LocalStorage(self.spool).write_bytes(name, data)
        if self.failure is None:
            try:
                self.remote.write_bytes(name, data)
            except StorageError as exc:
                self.failure = exc
                return
            spooled.unlink(missing_ok=True)

    def exists(self, name: str) -> bool:
        return name in self._known or self._remote(lambda: self.remote.exists(name))

    def list_files(self, folder: str) -> list[str]:
        prefix = f"{folder}/" if folder else ""
        mine = {n for n in self._known if n.startswith(prefix) and "/" not in n[len(prefix):]}
        return sorted(mine | set(self._remote(lambda: self.remote.list_files(folder))))

    def is_empty(self) -> bool:
        return not self._known and self._remote(self.remote.is_empty)

    def delete(self, name: str) -> None:
        self._known.pop(name, None)
        (self.spool / name).unlink(missing_ok=True)
        try:
            self.remote.delete(name)
        except StorageError as exc:
            self.failure = self.failure or exc

    def delete_folder(self, folder: str) -> None:
        for name in [n for n in self._known if n.startswith(f"{folder}/")]:
            del self._known[name]
        shutil.rmtree(self.spool / folder, ignore_errors=True)
        try:
            self.remote.delete_folder(folder)
        except StorageError as exc:
            self.failure = self.failure or exc

    def copy_in(self, name: str, filesystem: Any, path: str) -> None:
        if self.failure is None:
            try:
                self.remote.copy_in(name, filesystem, path)
                return
            except StorageError as exc:
                self.failure = exc
        if filesystem.equals(self.remote.fs):  # the source is in the store: copy it on drain
            pending = self.spool / self.COPIES / f"{name}.json"
            LocalStorage(pending.parent).write_bytes(pending.name, json.dumps(path).encode())
        else:
            with filesystem.open_input_stream(path) as f:
                self.write_bytes(name, f.read())

    def probe(self) -> None:
        self.remote.probe()

    def ray_storage(self, name: str) -> tuple[str, Any]:
        return self.remote.ray_storage(name)

    def healthy(self) -> bool:
        return self.failure is None and self.remote.healthy()

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise StorageError(f"{self.failure}; what was not uploaded is kept in {self.spool} "
                               f"and uploaded by `hybrid-nas search --resume {self.uri}`")

    def _remote(self, call):
        """A read from the store; once the store has failed, none is tried again this session."""
        if self.failure is not None:
            raise self.failure
        try:
            return call()
        except StorageError as exc:
            self.failure = exc
            raise

    def drain(self) -> int:
        """Upload every spooled file and pending copy (StorageError if the store is still out)."""
        done = 0
        copies = self.spool / self.COPIES
        for pending in sorted(copies.rglob("*.json")) if copies.is_dir() else []:
            name = pending.relative_to(copies).as_posix()[:-len(".json")]
            self.remote.copy_in(name, self.remote.fs, json.loads(pending.read_text()))
            pending.unlink()
            done += 1
        for spooled in sorted(self.spool.rglob("*")) if self.spool.is_dir() else []:
            if spooled.is_file() and copies not in spooled.parents and \
                    not spooled.name.startswith("."):
                self.remote.write_bytes(spooled.relative_to(self.spool).as_posix(),
                                        spooled.read_bytes())
                spooled.unlink()
                done += 1
        self.failure = None
        return done

    def discard_spool(self) -> None:
        shutil.rmtree(self.spool, ignore_errors=True)
