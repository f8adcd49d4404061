"""The monitor inside a gateway worker: samples finished requests, runs their background
evaluations, and once per `poll_interval_s` reads the ledger to detect drift, open or resolve
alerts and refresh the breaker's snapshot.

Nothing here runs on the request path except `on_request` (a coin toss and a queue put) and the
breaker's set lookup. All ledger I/O runs on one thread that owns the monitor's connection
(`MonitorLedger`); the encoder runs on another. Several workers share one ledger: each writes its
own evaluations, every worker's detector reads all of them in id order (SQLite hands out
increasing ids to serialized writers, so every reader sees the same sequence), and the ledger's
"one open alert per (kind, slice)" index makes their alert writes agree.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from kdroute.monitor.agreement import AgreementScorer, LLMJudge
from kdroute.monitor.alerts import AlertSink
from kdroute.monitor.breaker import Breaker
from kdroute.monitor.detect import Detector, DetectorSettings, Observation, input_drift
from kdroute.monitor.metrics import MonitorMetrics
from kdroute.monitor.sampling import StratifiedSampler
from kdroute.monitor.shadow import DailyBudget, Job, ShadowRunner, utc_midnight
from kdroute.monitor.slices import slices_of, train_family_classifier
from kdroute.route.features import conversation_text, message_text
from kdroute.store import Store

log = logging.getLogger("kdroute.monitor")
CATCH_UP_WINDOWS = 10  # at start, the detector replays this many windows of the newest rows
DRIFT_EVERY_POLLS = 10  # the input-drift check reads the requests table every 10th poll
CHAT_ROLES = ("system", "developer", "user", "assistant")
MAX_PENDING_ROWS = 10_000  # evaluation rows held while the ledger cannot be written


class MonitorLedger:
    """The monitor's ledger connection, owned by one thread; every call runs there in order.

    Evaluation rows are buffered and written in one transaction per poll (`flush`), not one per
    row: the request writer shares the file, and fewer write transactions means fewer lock waits.
    """

    def __init__(self, path, busy_timeout_ms: int, budget: DailyBudget, metrics=None):
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.budget = budget
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="kdroute-monitor-ledger")
        self._store: Store | None = None
        self._pending: list[tuple[dict, float]] = []
        self._lock = threading.Lock()

    def _store_here(self) -> Store:
        if self._store is None:
            self._store = Store(self.path, self.busy_timeout_ms)
        return self._store

    async def run(self, fn, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._store_here(), *args))

    def add_shadow(self, row: dict, cost: float) -> None:
        """Queue an evaluation row (any thread); its cost counts against the budget at once."""
        with self._lock:
            self._pending.append((row, cost))
        self.budget.spend(cost)

    def flush(self, store: Store) -> float:
        """In the ledger thread: write the queued rows in one transaction; their cost. A failed
        write (a locked file) keeps the rows for the next poll, up to MAX_PENDING_ROWS; beyond
        that the oldest are dropped and counted."""
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return 0.0
        try:
            store.insert_shadows([row for row, _ in batch])
        except Exception as exc:
            log.warning("could not write %d monitor evaluations (will retry): %s", len(batch), exc)
            with self._lock:
                self._pending = batch + self._pending
                overflow = len(self._pending) - MAX_PENDING_ROWS
                if overflow > 0:
                    dropped, self._pending = self._pending[:overflow], self._pending[overflow:]
                    for row, _ in dropped:  # paid for: their cost stays in the budget
                        if self.metrics is not None:
                            self.metrics.failed.labels(row.get("kind") or "shadow",
                                                       "ledger").inc()
            return 0.0
        return sum(cost for _, cost in batch)

    def close(self) -> None:
        def close_store() -> None:
            self.flush(self._store_here())
            if self._store is not None:
                self._store.close()
                self._store = None

        self._executor.submit(close_store).result(timeout=30)
        self._executor.shutdown(wait=True)


class Monitor:
    def __init__(self, settings, targets: dict, registry=None, *, router=None, client=None,
                 judge=None, redact=None, seed: int | None = None):
        cfg = settings.monitor
        self.cfg = cfg
        self.targets = targets
        self.metrics = MonitorMetrics(registry)
        self.detector = Detector(DetectorSettings.from_config(cfg))
        self.budget = DailyBudget(cfg.shadow_budget_usd)
        self.ledger = MonitorLedger(settings.path(settings.store.path),
                                    settings.store.busy_timeout_ms, self.budget, self.metrics)
        self.sampler = StratifiedSampler(cfg.shadow_rate, cfg.shadow_near_band,
                                         cfg.shadow_near_boost, seed=seed)
        self.prober = StratifiedSampler(cfg.probe_rate, seed=None if seed is None else seed + 1)
        self.scorer = AgreementScorer(cfg.tiers, cfg.embedding_threshold, cfg.judge_band, judge)
        self.breaker = Breaker(cfg.breaker, cfg.score_buckets, self.metrics)
        self.sink = AlertSink(cfg.webhook_url, self.metrics, client, cfg.webhook_timeout_s,
                              cfg.webhook_retries)
        self._embed_executor = ThreadPoolExecutor(1, thread_name_prefix="kdroute-monitor-embed")
        self.runner = ShadowRunner(
            targets=targets, scorer=self.scorer, ledger=self.ledger, budget=self.budget,
            metrics=self.metrics, queue_size=cfg.shadow_queue_size,
            concurrency=cfg.shadow_concurrency, max_tokens=cfg.shadow_max_tokens,
            store_pairs=cfg.store_pairs, redact=redact or (lambda text: text),
            run_blocking=self._run_blocking)
        self.router_version = getattr(router, "version", None)
        calibration = getattr(getattr(router, "artifact", None), "calibration", None) or {}
        self.reference_share = calibration.get("teacher_share")
        self._drift_reference: list[tuple[str, float, float]] | None = None
        self._last_id = 0
        self._polls = 0
        self._tasks: list[asyncio.Task] = []

    async def _run_blocking(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._embed_executor, fn, *args)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.runner.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll_forever(), name="kdroute-monitor-poll")]
        if self.cfg.family_slices:
            self._tasks.append(loop.create_task(self._train_classifier()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        await self.runner.stop()
        await self.sink.aclose()
        await asyncio.to_thread(self.ledger.close)
        self._embed_executor.shutdown(wait=False, cancel_futures=True)

    async def _train_classifier(self) -> None:
        try:
            examples = await self.ledger.run(lambda store: store.family_prompts())
            classifier = await asyncio.to_thread(train_family_classifier, examples)
        except Exception:
            log.exception("could not train the task-family classifier; slicing by score only")
            return
        if classifier is not None:
            self.breaker.classify = lambda conv: classifier.predict(conversation_text(conv))
            log.info("monitor slices by task family: %s", ", ".join(classifier.families))

    # --- the listener -----------------------------------------------------------------------------

    def on_request(self, record) -> None:
        """Gateway listener: maybe queue a background evaluation of this finished request."""
        # only whole answers the client received (a stream cut short has status 200 too)
        if not record.answered or not record.response_text or not record.conversation:
            return
        if record.served_role == "student" and not record.fallback:
            kind = "shadow"
            prob = self.sampler.sample(record.router_score, record.threshold)
            estimate = record.teacher_cost_usd  # the teacher's price for these very tokens
        elif record.served_role == "teacher" and record.route_reason == "breaker":
            kind = "probe"
            prob = self.prober.sample()
            prices = self.targets["student"].prices
            estimate = ((record.prompt_tokens or 0) * prices.input_per_1m
                        + (record.completion_tokens or 0) * prices.output_per_1m) / 1e6
        else:
            return
        if prob is None:
            return
        conversation = _plain_conversation(record.conversation)
        if conversation is None:  # tool calls cannot be replayed safely: not evaluated
            return
        self.runner.submit(Job(
            kind=kind, request_id=record.id, endpoint=record.endpoint, conversation=conversation,
            prompt=conversation_text(conversation), answer=record.response_text,
            served_model=record.served_model or "", inclusion_prob=prob, estimated_cost=estimate,
            router_score=record.router_score, threshold=record.threshold,
            router_version=record.router_version, slice=getattr(record, "slice", None) or "all"))

    # --- the poll loop ----------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a locked or broken ledger: keep the last state, try again
                self.metrics.poll_errors.inc()
                log.exception("monitor poll failed; keeping the last breaker state")
            await asyncio.sleep(self.cfg.poll_interval_s)

    async def poll_once(self) -> None:
        """Read new evaluations and the open alerts, act on what the detectors say, and hand the
        breaker the open quality alerts."""
        drift_due = self._polls % DRIFT_EVERY_POLLS == 0
        self._polls += 1
        rows, open_alerts, drift = await self.ledger.run(self._read, drift_due)
        for row in rows:
            self._last_id = max(self._last_id, row["id"])
            self.detector.add(Observation(
                float(row["verdict"]), row["inclusion_prob"] or 1.0,
                slices_of(row["slice"], row["router_score"], self.cfg.score_buckets)))
        open_keys = {(a["kind"], a["slice"]) for a in open_alerts}
        actions = self.detector.evaluate(open_keys)
        if drift is not None:
            actions += input_drift(*drift, self.reference_share, self.cfg,
                                   ("input_drift", "all") in open_keys)
        if actions:
            applied, open_alerts = await self.ledger.run(_apply, actions)
            for event, alert in applied:
                self.metrics.alerts.labels(alert["kind"], event.removeprefix("alert_")).inc()
                self.sink.emit(event, alert)
        self.breaker.update({a["slice"] for a in open_alerts if a["kind"] == "quality"})
        self._export(open_alerts)

    def _read(self, store: Store, drift_due: bool):
        """In the ledger thread: this worker's queued rows written, then new evaluations (its own
        and other workers'), open alerts, today's spend, drift windows."""
        flushed = self.ledger.flush(store)
        if self._last_id == 0:  # catch up on the served student's own evaluations only: a new
            # release starts with a clean slate, not with its predecessor's alerts' evidence
            student = self.targets.get("student")
            rows = store.latest_evaluations(CATCH_UP_WINDOWS * self.cfg.window,
                                            getattr(getattr(student, "backend", None), "name", None))
            self._last_id = store.last_evaluation_id()  # other students' rows are skipped too
        else:
            rows = store.evaluations_after(self._last_id)
        open_alerts = store.open_alerts()
        self.budget.snapshot(store.monitor_spend(utc_midnight()), flushed)
        drift = self._drift_windows(store) if drift_due else None
        return rows, open_alerts, drift

    def _drift_windows(self, store: Store):
        """(reference, recent) router scores: the first and the latest `drift_window` routed
        requests of this router version, once there are enough for both not to overlap."""
        n = self.cfg.drift_window
        if self._drift_reference is None:
            reference = store.routed_scores(self.router_version, n, oldest=True)
            if len(reference) < n:
                return None
            self._drift_reference = reference
        recent = store.routed_scores(self.router_version, n)
        if len(recent) < n or recent[0][0] <= self._drift_reference[-1][0]:
            return None
        return self._drift_reference, recent

    def _export(self, open_alerts: list[dict]) -> None:
        for name, rate in self.detector.rates().items():
            if rate.n:
                for bound, value in (("value", rate.value), ("lower", rate.lower),
                                     ("upper", rate.upper)):
                    self.metrics.agreement.labels(name, bound).set(value)
        kinds = {"quality": 0, "decay": 0, "input_drift": 0}
        for alert in open_alerts:
            kinds[alert["kind"]] = kinds.get(alert["kind"], 0) + 1
        for kind, n in kinds.items():
            self.metrics.open_alerts.labels(kind).set(n)
        self.metrics.spent_today.set(self.budget.spent)


def _apply(store: Store, actions) -> tuple[list[tuple[str, dict]], list[dict]]:
    """In the ledger thread: open/resolve; what this worker changed, and the open alerts after."""
    applied = []
    for act in actions:
        if act.action == "open":
            alert_id = store.open_alert_once(act.row())
            if alert_id is not None:
                applied.append(("alert_opened", store.db["alerts"].get(alert_id)))
        else:
            resolved = store.resolve_open_alert(act.kind, act.slice, act.value, act.bound)
            if resolved is not None:
                applied.append(("alert_resolved", resolved))
    return applied, store.open_alerts()


def _plain_conversation(conversation) -> list[dict[str, str]] | None:
    """Role and text of each message, or None when the conversation uses tools."""
    out = []
    for message in conversation:
        role = message.get("role")
        if role not in CHAT_ROLES or message.get("tool_calls") or message.get("function_call"):
            return None
        out.append({"role": role, "content": message_text(message)})
    return out


def build_monitor(settings, targets: dict, registry=None, *, router=None, client=None,
                  redact=None) -> Monitor:
    """The monitor of one gateway app: its judge (tier 3) on the configured model, else on the
    teacher's back end."""
    judge = None
    cfg = settings.monitor
    if "judge" in cfg.tiers:
        target = targets["teacher"]
        if cfg.judge is not None:
            from kdroute.gateway.backends import build_backend  # the gateway's own back ends
            from kdroute.gateway.costing import resolve_prices

            backend = build_backend("monitor.judge", cfg.judge, settings, client)
            judge = LLMJudge(backend, resolve_prices("monitor.judge", cfg.judge),
                             cfg.judge.timeout_s)
        else:
            judge = LLMJudge(target.backend, target.prices, target.timeout_s)
    return Monitor(settings, targets, registry, router=router, client=client, judge=judge,
                   redact=redact)
