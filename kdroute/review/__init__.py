"""The dashboard's figures: what `dashboards/app.py` shows, computed from the ledger's read-only
views (`kdroute.store.views`) and the monitor's statistics (`kdroute.monitor.stats`), as plain
DataFrames and dicts. No Streamlit here, so every figure is tested without a browser and the page
holds layout only.

`load(view)` reads the cubes once (a `Snapshot`); each figure function selects a `Scope` (the
filters) from them, so a filter change costs no new scan of the requests table.
"""

from kdroute.review.common import Snapshot, bucket_labels, load, select, until_after

__all__ = ["Snapshot", "bucket_labels", "load", "select", "until_after"]
