"""The ledger (SQLite via sqlite-utils). Light to import: no ML libraries."""

from kdroute.store.ledger import Store, connect, now
from kdroute.store.writer import BatchedWriter

__all__ = ["BatchedWriter", "Store", "connect", "now"]
