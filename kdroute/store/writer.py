"""A background batched writer for the gateway's request rows: the request path never waits on
SQLite, and no answered request loses its row.

- The request path only enqueues. One thread drains the bounded queue and writes each batch in
  one `BEGIN IMMEDIATE` transaction (a deferred BEGIN would take a read lock first, and SQLite
  refuses the read-to-write upgrade at once when another process writes: busy_timeout never
  applies to it).
- A batch that fails for any reason other than a busy ledger is retried row by row, so only a
  row SQLite truly cannot take is dropped, and counted (`failed`).
- A busy or locked ledger is waited out, however long: rows stay queued (bounded by the queue;
  overflow is counted in `dropped`, and the wait is logged every `warn_every_s`).
- With a spool directory, every row is also appended to this process's spool file before it is
  queued (one write() of a JSON line, no fsync). A process killed with `kill -9` leaves its spool
  behind; the next writer that starts on the same ledger replays it (INSERT OR IGNORE: rows that
  did reach the ledger are not doubled) and deletes it. A spool file is locked by its owner, so a
  live worker's spool is never replayed by another. A request that was still in flight when the
  process died is logged from its spooled start line as status 502 with an error saying so.
  What the promise does not cover: an OS crash or power loss can lose the spool's last writes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdroute.store.ledger import Store

log = logging.getLogger(__name__)
_STOP = object()
SPOOL_SEGMENT_ROWS = 20000  # rows per spool file before the next one (old ones are deleted)
DIED_IN_FLIGHT = ("the gateway process died before this request finished (row recovered from "
                  "the spool at restart)")


class BatchedWriter:
    def __init__(self, path: str, *, table: str = "requests", queue_size: int = 10000,
                 batch_size: int = 200, flush_interval_s: float = 0.5,
                 busy_timeout_ms: int = 5000, spool_dir: str | os.PathLike | None = None,
                 warn_every_s: float = 5.0):
        self.path = path
        self.table = table
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.busy_timeout_ms = busy_timeout_ms
        self.warn_every_s = warn_every_s
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self.replayed = 0  # rows recovered from dead processes' spools at start
        self.blocked_since: float | None = None  # monotonic time the ledger became unwritable
        self.spool = Spool(Path(spool_dir), table) if spool_dir is not None else None

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def blocked_for(self) -> float:
        """Seconds the ledger has been unwritable (locked by another connection); 0 if not."""
        since = self.blocked_since
        return 0.0 if since is None else time.monotonic() - since

    def start(self) -> BatchedWriter:
        if self._thread is None:
            if self.spool is not None:
                self.spool.open()
            self._thread = threading.Thread(target=self._run, name="kdroute-writer", daemon=True)
            self._thread.start()
        return self

    def begin(self, row: Mapping[str, Any]) -> None:
        """Note a request that has started (spool only): if the process dies before `put`, the
        next start logs it as lost in flight instead of forgetting it."""
        if self.spool is not None:
            self.spool.append({"_begin": True, **row})

    def put(self, row: Mapping[str, Any]) -> bool:
        """Enqueue a row without blocking; False (and counted as dropped) when the queue is full.
        With a spool, a dropped row is still in the spool and is replayed at the next start."""
        row = dict(row)
        if self.spool is not None:
            self.spool.append(row)
        try:
            self._queue.put_nowait(row)
            return True
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return False

    def close(self, timeout: float = 30.0) -> None:
        """Flush everything queued so far and stop the thread."""
        if self._thread is None:
            return
        self._queue.put(_STOP)  # blocks only if full, which the drain relieves
        self._thread.join(timeout)
        if not self._thread.is_alive() and self.spool is not None:
            self.spool.close(remove=self.dropped == 0 and self.failed == 0)
        self._thread = None

    def __enter__(self) -> BatchedWriter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        store = Store(self.path, self.busy_timeout_ms)  # a connection owned by this thread
        try:
            if self.spool is not None:
                self.replayed += self.spool.replay_dead(store, self._insert_or_wait)
            stopping = False
            while not stopping:
                batch, stopping = self._collect()
                if batch:
                    self._write(store, batch)
                    if self.spool is not None and self.dropped == 0 and self.failed == 0:
                        self.spool.committed(len(batch))
        finally:
            store.close()

    def _collect(self) -> tuple[list[dict], bool]:
        batch: list[dict] = []
        deadline = time.monotonic() + self.flush_interval_s
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(remaining, 0.001)) if remaining > 0 \
                    else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                batch.extend(self._drain())
                return batch, True
            batch.append(item)
        return batch, False

    def _drain(self) -> list[dict]:
        rest = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return rest
            if item is not _STOP:
                rest.append(item)

    def _write(self, store: Store, batch: list[dict]) -> None:
        try:
            self._insert_or_wait(store, batch)
            with self._lock:
                self.written += len(batch)
            return
        except Exception as exc:  # a bad row (e.g. unencodable text) must not kill the thread
            log.warning("ledger batch of %d rows failed (%s); writing them one by one",
                        len(batch), exc)
        for row in batch:  # only a row SQLite cannot take is lost, and it is counted
            try:
                self._insert_or_wait(store, [row])
                with self._lock:
                    self.written += 1
            except Exception as exc:
                with self._lock:
                    self.failed += 1
                log.error("ledger row %s dropped: %s", row.get("id"), exc)

    def _insert_or_wait(self, store: Store, rows: list[dict], ignore: bool = False) -> None:
        """Insert `rows` in one IMMEDIATE transaction; while the ledger is busy or locked, wait
        and retry (saying so every warn_every_s). Other errors are raised."""
        wait, last_warning = 0.05, 0.0
        while True:
            try:
                insert_rows(store, self.table, rows, ignore=ignore)
                if self.blocked_since is not None:
                    log.warning("ledger writable again after %.1f s",
                                time.monotonic() - self.blocked_since)
                    self.blocked_since = None
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                now = time.monotonic()
                if self.blocked_since is None:
                    self.blocked_since = now
                if now - last_warning >= self.warn_every_s:
                    last_warning = now
                    log.warning("ledger %s is locked by another connection (%s) for %.1f s: "
                                "%d rows waiting in memory, %d dropped so far", self.path, exc,
                                now - self.blocked_since, self.depth + len(rows), self.dropped)
                time.sleep(wait)
                wait = min(wait * 2, 1.0)


def insert_rows(store: Store, table: str, rows: list[dict], ignore: bool = False) -> None:
    """One `BEGIN IMMEDIATE` transaction: the write lock is taken up front, so busy_timeout
    applies to it (a deferred transaction that read first gets SQLITE_BUSY at once)."""
    conn = store.db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        store.db[table].insert_all(rows, pk="id", replace=not ignore, ignore=ignore,
                                   batch_size=len(rows), alter=False)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Spool:
    """This process's append-only journal of rows, replayed after a crash (see module doc)."""

    def __init__(self, directory: Path, table: str):
        self.directory = directory
        self.table = table
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._segment = 0
        self._rows_in_segment = 0
        self._closed_segments: list[tuple[Path, int]] = []  # (file, rows appended before it)
        self._appended = 0  # rows appended (done rows; begin lines are not counted)
        self._committed = 0

    def _path(self, segment: int) -> Path:
        return self.directory / f"{self._name}-{segment:06d}.jsonl"

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._open_segment()

    def _open_segment(self) -> None:
        fd = os.open(self._path(self._segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel if we die
        self._fd = fd

    def append(self, row: Mapping[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=True, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            if self._fd is None:
                return
            os.write(self._fd, line.encode())
            if "_begin" in row:
                return
            self._appended += 1
            self._rows_in_segment += 1
            if self._rows_in_segment >= SPOOL_SEGMENT_ROWS:
                old = self._path(self._segment)
                os.close(self._fd)
                self._closed_segments.append((old, self._appended))
                self._segment += 1
                self._rows_in_segment = 0
                self._open_segment()

    def committed(self, n: int) -> None:
        """`n` more rows are in the ledger: delete closed segments that are wholly written."""
        with self._lock:
            self._committed += n
            while self._closed_segments and self._closed_segments[0][1] <= self._committed:
                path, _ = self._closed_segments.pop(0)
                path.unlink(missing_ok=True)

    def close(self, remove: bool) -> None:
        """At a clean shutdown every row is in the ledger: the spool goes (kept if any row was
        dropped or failed, so the next start retries them)."""
        with self._lock:
            if self._fd is None:
                return
            os.close(self._fd)
            self._fd = None
            if remove:
                for path in self.directory.glob(f"{self._name}-*.jsonl"):
                    path.unlink(missing_ok=True)

    def replay_dead(self, store: Store, insert) -> int:
        """Rows of spools whose owner died (their lock is free), inserted if missing; then the
        files are deleted. Returns the number of rows that were missing from the ledger."""
        if not self.directory.is_dir():
            return 0
        recovered = files = 0
        for path in sorted(self.directory.glob("*.jsonl")):
            if path.name.startswith(self._name):
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # another worker replayed it meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its owner is alive
                recovered += self._replay_file(store, path, insert)
                files += 1
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        if files:
            log.warning("recovered %d request rows from %d spool files left by a gateway process "
                        "that did not shut down cleanly", recovered, files)
        return recovered

    def _replay_file(self, store: Store, path: Path, insert) -> int:
        done: dict[str, dict] = {}
        begun: dict[str, dict] = {}
        with path.open("rb") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by the crash: that request was still in flight
                if row.pop("_begin", False):
                    begun[row["id"]] = row
                else:
                    done[row["id"]] = row
        for request_id, row in begun.items():
            if request_id not in done:
                done[request_id] = dict(row, status=502, error=DIED_IN_FLIGHT)
        rows = list(done.values())
        if not rows:
            return 0
        before = store.db[self.table].count
        for start in range(0, len(rows), 500):
            insert(store, rows[start:start + 500], ignore=True)
        return store.db[self.table].count - before
