"""A background batched writer for the gateway's request rows.

The request path only enqueues (never blocks on SQLite). A single thread drains the bounded queue
and writes batches in one transaction each, flushing when a batch is full, when the interval has
passed, and at shutdown. A full queue drops the row and counts it, so the gateway can report it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

from kdroute.store.ledger import Store

log = logging.getLogger(__name__)
_STOP = object()


class BatchedWriter:
    def __init__(self, path: str, *, table: str = "requests", queue_size: int = 10000,
                 batch_size: int = 200, flush_interval_s: float = 0.5,
                 busy_timeout_ms: int = 5000):
        self.path = path
        self.table = table
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.busy_timeout_ms = busy_timeout_ms
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.written = 0
        self.dropped = 0
        self.failed = 0

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> BatchedWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kdroute-writer", daemon=True)
            self._thread.start()
        return self

    def put(self, row: Mapping[str, Any]) -> bool:
        """Enqueue a row without blocking; False (and counted as dropped) when the queue is full."""
        try:
            self._queue.put_nowait(dict(row))
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
        self._thread = None

    def __enter__(self) -> BatchedWriter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        store = Store(self.path, self.busy_timeout_ms)  # a connection owned by this thread
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._collect()
                if batch:
                    self._write(store, batch)
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
        for attempt in range(5):
            try:
                with store.db.atomic():
                    store.db[self.table].insert_all(batch, pk="id", replace=True,
                                                    batch_size=len(batch), alter=False)
                with self._lock:
                    self.written += len(batch)
                return
            except Exception as exc:  # a locked or broken DB must not kill the writer thread
                log.warning("ledger write failed (attempt %d): %s", attempt + 1, exc)
                time.sleep(0.05 * 2**attempt)
        with self._lock:
            self.failed += len(batch)
