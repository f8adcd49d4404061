"""The snapshot of cubes a page is drawn from, and selecting a scope out of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kdroute.store.queries import NONE, Scope
from kdroute.store.views import BUCKETS, LATENCY_BINS_PER_DECADE

if TYPE_CHECKING:
    from kdroute.store.views import LedgerView

STEP = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
FORMAT = {"minute": "%Y-%m-%dT%H:%M", "hour": "%Y-%m-%dT%H", "day": "%Y-%m-%d"}


@dataclass
class Snapshot:
    """Everything the page needs that does not depend on the filters, read in one go."""

    unit: str  # minute | hour | day: the time bucket of every cube
    counts: dict[str, int]
    span: tuple[str | None, str | None]
    traffic: pd.DataFrame
    latency: pd.DataFrame
    scores: pd.DataFrame
    shadow: pd.DataFrame
    alerts: pd.DataFrame
    routers: pd.DataFrame
    bench_runs: pd.DataFrame
    bench_results: pd.DataFrame
    distill_runs: pd.DataFrame
    training: pd.DataFrame
    latest_router: tuple = field(default=(None, None, None))
    sample_every: int = 1  # the histograms hold every k-th request

    @property
    def empty(self) -> bool:
        return not any(self.counts.values())

    def options(self) -> dict[str, list[str]]:
        """The values each filter can take (served models, router versions, slices)."""
        frames = (self.traffic, self.shadow)
        return {dim: sorted({v for f in frames if dim in f for v in f[dim].unique()})
                for dim in ("served_model", "router_version", "slice")}

    def buckets(self) -> list[str]:
        """Every bucket label from the first to the last request or evaluation."""
        seen = pd.concat([self.traffic.get("bucket", pd.Series(dtype=str)),
                          self.shadow.get("bucket", pd.Series(dtype=str))])
        if seen.empty:
            return []
        return bucket_labels(seen.min(), seen.max(), self.unit)


def load(view: LedgerView) -> Snapshot:
    with view.consistent():
        return _read(view)


def _read(view: LedgerView) -> Snapshot:
    unit, every = view.bucket_unit(), view.sample_every()
    return Snapshot(
        unit=unit, counts=view.counts(), span=view.span(), traffic=view.traffic(unit),
        latency=view.latency_histogram(unit, every), scores=view.score_histogram(unit, every),
        shadow=view.shadow(unit), alerts=view.alerts(), routers=view.routers(),
        bench_runs=view.runs("bench"), bench_results=view.bench_results(),
        distill_runs=view.runs("distill"), training=view.training_metrics(),
        latest_router=tuple(view.latest_router()), sample_every=every)


def parse_bucket(label: str, unit: str) -> datetime:
    return datetime.strptime(label[: BUCKETS[unit]], FORMAT[unit])


def bucket_labels(first: str, last: str, unit: str) -> list[str]:
    """Labels of every bucket from `first`'s to `last`'s, empty ones included."""
    start, end = parse_bucket(first, unit), parse_bucket(last, unit)
    count = int((end - start) / STEP[unit]) + 1
    return [(start + i * STEP[unit]).strftime(FORMAT[unit]) for i in range(count)]


def later(label: str, unit: str, delta: timedelta) -> str:
    """The label of the bucket `delta` after bucket `label`."""
    return (parse_bucket(label, unit) + delta).strftime(FORMAT[unit])


def until_after(label: str, unit: str) -> str:
    """The exclusive upper bound of a range ending with bucket `label`: the next bucket's label
    (a string prefix, so `ts < until` keeps every timestamp inside `label`)."""
    return later(label, unit, STEP[unit])


def select(frame: pd.DataFrame, scope: Scope, ts: str = "bucket") -> pd.DataFrame:
    """The rows of a cube inside `scope` (the same rule as `kdroute.store.queries.where`; the
    bounds are bucket labels, which is what the page's time filter gives)."""
    if frame.empty:
        return frame
    keep = np.ones(len(frame), dtype=bool)
    if scope.since is not None:
        keep &= (frame[ts] >= scope.since).to_numpy()
    if scope.until is not None:
        keep &= (frame[ts] < scope.until).to_numpy()
    for column, values in (("served_model", scope.served_models),
                           ("router_version", scope.router_versions), ("slice", scope.slices)):
        if values is not None and column in frame:
            keep &= frame[column].isin(values).to_numpy()
    return frame[keep]


def bucket_start(frame: pd.DataFrame, unit: str) -> pd.Series:
    """The bucket labels of a cube as timestamps (for time axes)."""
    return pd.to_datetime(frame["bucket"], format=FORMAT[unit])


def percentiles(hist: pd.DataFrame, by: list[str], qs=(0.5, 0.95)) -> pd.DataFrame:
    """Percentiles read off log-binned counts (`bin`, `n`) per group: the bin where the
    cumulative count crosses q·N, interpolated geometrically inside it."""
    k = LATENCY_BINS_PER_DECADE
    rows = []
    for key, group in hist.groupby(by, sort=True):
        counts = group.groupby("bin")["n"].sum().sort_index()
        cum, total = counts.cumsum().to_numpy(), counts.sum()
        bins = counts.index.to_numpy()
        row = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        row["n"] = int(total)
        for q in qs:
            i = int(np.searchsorted(cum, q * total))
            below = cum[i - 1] if i > 0 else 0
            frac = (q * total - below) / counts.iloc[i] if counts.iloc[i] else 0.0
            row[f"p{round(q * 100)}"] = float(10 ** ((bins[i] + frac) / k))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*by, "n", *(f"p{round(q * 100)}" for q in qs)])


def label(value: str | None) -> str:
    return NONE if value is None else str(value)
