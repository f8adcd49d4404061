"""Cached reads of the ledger: one snapshot of cubes per ledger (short TTL, so a live gateway's
new rows appear), and the few per-filter queries. Every read opens its own read-only view."""

from __future__ import annotations

import streamlit as st

from kdroute import review
from kdroute.store.queries import Scope
from kdroute.store.views import LedgerView

TTL_S = 30  # seconds a read is reused before the ledger is read again
BOOTSTRAP_GROUPS = 64


@st.cache_data(ttl=TTL_S, show_spinner="Reading the ledger…", max_entries=4)
def snapshot(path: str) -> review.Snapshot:
    with LedgerView(path) as view:
        return review.load(view)


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=64)
def scoped(path: str, scope: Scope, window: int):
    """(savings parts for the bootstrap, the newest `window` verdicts, the newest disagreements)
    of one filter setting."""
    with LedgerView(path) as view:
        return (view.savings_parts(scope, BOOTSTRAP_GROUPS), view.recent_verdicts(scope, window),
                view.disagreements(scope, limit=500))


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=8)
def all_disagreements(path: str, scope: Scope):
    with LedgerView(path) as view:
        return view.disagreements(scope)
