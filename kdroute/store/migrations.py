"""The ledger's schema, as append-only numbered migrations applied when the store opens.

Never edit an applied migration: add a new numbered one below. Each table says why it exists.
"""

from sqlite_utils import Database, Migrations

migrations = Migrations("kdroute")


@migrations(name="m001_initial")
def m001_initial(db: Database) -> None:
    # runs: one row per invocation of a stage (distill, bench, route, serve), so every result
    # row can say which command produced it and whether that command finished.
    db["runs"].create(
        {
            "id": str,
            "kind": str,
            "status": str,  # running | done | failed
            "started_at": str,
            "finished_at": str,
            "config_json": str,
            "output_dir": str,
            "error": str,
        },
        pk="id",
    )
    # models: the teacher/student identities results are keyed by; the fingerprint is a hash of
    # weights+config (local) or the endpoint name (remote), so caches survive renames.
    db["models"].create(
        {
            "fingerprint": str,
            "reference": str,
            "kind": str,  # hf | litellm | endpoint
            "params": int,
            "input_price_per_1m": float,
            "output_price_per_1m": float,
            "card_json": str,
            "created_at": str,
        },
        pk="fingerprint",
    )
    # training_metrics: per-step loss curves of distill runs, for the dashboard.
    db["training_metrics"].create(
        {
            "id": int,
            "run_id": str,
            "step": int,
            "split": str,  # train | validation
            "loss": float,
            "kd_loss": float,
            "ce_loss": float,
            "lr": float,
            "tokens_per_s": float,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["training_metrics"].create_index(["run_id", "step"])
    # bench_results: one aggregate metric of one model on one task in one bench run; cache_key
    # lets a later run reuse a teacher's results instead of evaluating it again.
    db["bench_results"].create(
        {
            "id": int,
            "run_id": str,
            "model_fingerprint": str,
            "role": str,  # teacher | student | system
            "task": str,
            "task_version": str,
            "metric": str,
            "value": float,
            "stderr": float,
            "n": int,
            "lm_eval_version": str,
            "num_fewshot": int,
            "limit_n": int,
            "cache_key": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["bench_results"].create_index(["cache_key"])
    db["bench_results"].create_index(["run_id"])
    # bench_samples: every scored item, so routers can learn which prompts the student fails.
    db["bench_samples"].create(
        {
            "id": int,
            "run_id": str,
            "model_fingerprint": str,
            "role": str,
            "task": str,
            "doc_id": int,
            "prompt": str,
            "target": str,
            "response": str,
            "score": float,
            "family": str,
            "difficulty": str,
            "cache_key": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["bench_samples"].create_index(["run_id", "task", "doc_id"])
    db["bench_samples"].create_index(["cache_key"])
    # routers: saved router artifacts with the pair they were fit for and their offline metrics.
    db["routers"].create(
        {
            "version": str,
            "scorer": str,
            "threshold": float,
            "calibration_json": str,
            "teacher": str,
            "student": str,
            "metrics_json": str,
            "path": str,
            "created_at": str,
        },
        pk="version",
    )
    # requests: one row per gateway request, never lost — the cost/savings ledger.
    db["requests"].create(
        {
            "id": str,
            "ts": str,
            "endpoint": str,
            "requested_model": str,
            "served_model": str,
            "served_role": str,  # teacher | student
            "route_reason": str,  # router | override | fallback | breaker | error
            "router_score": float,
            "threshold": float,
            "router_version": str,
            "latency_ms": float,
            "ttft_ms": float,
            "prompt_tokens": int,
            "completion_tokens": int,
            "cost_usd": float,
            "teacher_cost_usd": float,
            "status": int,
            "error": str,
            "fallback": int,
            "stream": int,
            "key_id": str,
            "prompt_text": str,
            "response_text": str,
        },
        pk="id",
    )
    db["requests"].create_index(["ts"])
    # shadow_evals: teacher answers to sampled student-served requests, for drift detection.
    db["shadow_evals"].create(
        {
            "id": int,
            "request_id": str,
            "ts": str,
            "teacher_model": str,
            "teacher_response": str,
            "agreement": float,
            "method": str,
            "teacher_cost_usd": float,
            "latency_ms": float,
        },
        pk="id",
    )
    db["shadow_evals"].create_index(["ts"])
    # alerts: drift alerts with the statistic and bound that opened them, and when they closed.
    db["alerts"].create(
        {
            "id": int,
            "kind": str,
            "opened_at": str,
            "resolved_at": str,
            "statistic": str,
            "value": float,
            "bound": float,
            "window": int,
            "threshold": float,
            "message": str,
        },
        pk="id",
    )


@migrations(name="m002_monitor")
def m002_monitor(db: Database) -> None:
    # shadow_evals grows what the monitor needs per pair. A row is either
    #   kind = "shadow": a student-served request, answered again by the teacher in the background;
    #   kind = "probe":  while the quality breaker is open, a teacher-served request (the client got
    #                    the teacher's answer) answered again by the student in the background,
    #                    so the monitor can see the student recover.
    # `agreement` is the verdict as a number (1.0 agree, 0.0 disagree, NULL undecided or failed):
    # the value every rate is computed on; `score` is the raw score of `method` (1/0 for an
    # extracted-answer match, the cosine for embedding, the judge's probability for llm_judge).
    # `inclusion_prob` is the probability this request was sampled, so rates weighted by its
    # inverse are unbiased under stratified sampling. Text columns are filled only when
    # monitor.store_pairs is on (redacted like the request log).
    table = db["shadow_evals"]
    for name, kind in (
        ("kind", str),  # shadow | probe
        ("status", str),  # ok | failed
        ("error", str),
        ("student_model", str),
        ("prompt_text", str),
        ("student_response", str),
        ("score", float),
        ("verdict", int),  # 1 agree | 0 disagree | NULL undecided
        ("inclusion_prob", float),
        ("router_score", float),
        ("threshold", float),
        ("router_version", str),
        ("slice", str),  # e.g. "family:arith"; the overall stream is "all"
        ("student_cost_usd", float),  # what a probe's background student answer cost
    ):
        table.add_column(name, kind)
    table.create_index(["request_id"])
    table.create_index(["kind", "ts"])
    # alerts: the slice an alert is about ("all" = the whole stream), how many evaluations the
    # statistic rested on, and the statistic when it resolved. kind says what opened it:
    # quality (agreement bound below the floor; these drive the breaker), decay (a sequential
    # detector), input_drift (router-score PSI / teacher share against the calibration).
    alerts = db["alerts"]
    for name, kind in (("slice", str), ("n", int), ("resolved_value", float),
                       ("resolved_bound", float)):
        alerts.add_column(name, kind)
    # At most one open alert per (kind, slice), whichever gateway worker opens it first: the
    # others' INSERT OR IGNORE finds it open. This is what lets several workers share one
    # breaker state through the ledger.
    db.execute("CREATE UNIQUE INDEX alerts_one_open ON alerts(kind, slice) "
               "WHERE resolved_at IS NULL")
    # requests: the monitor's slice of each request (the same classifier the shadow rows use), so
    # the breaker can act per slice and the dashboard can filter by it.
    db["requests"].add_column("slice", str)


@migrations(name="m003_requests_by_hour")
def m003_requests_by_hour(db: Database) -> None:
    # The dashboard's traffic cube groups every request by hour, served model, router version,
    # slice, route reason and status, summing roles, fallbacks and costs. Without an index that
    # is a sort of the whole table (~6 s for a million rows on a busy 2-core machine); with this
    # covering index on exactly those expressions SQLite reads the groups in order from the
    # index alone (~1.3 s), whatever the ledger's size per hour. It costs the writer ~25 % more
    # time per inserted row (off the request path) and ~110 bytes per row on disk.
    db.execute("CREATE INDEX requests_by_hour ON requests(substr(ts, 1, 13), served_model, "
               "router_version, slice, route_reason, status, served_role, fallback, cost_usd, "
               "teacher_cost_usd)")


@migrations(name="m004_gateway_stream_outcome")
def m004_gateway_stream_outcome(db: Database) -> None:
    # requests.status is the HTTP status the client saw. A stream has sent its 200 before the
    # answer exists, so how it ended is a second fact: completed (it reached [DONE]),
    # upstream_error (the back end broke: the client got an error event, then [DONE]) or
    # client_disconnected (the client left first). NULL for requests that did not stream, and
    # for rows written before this migration.
    db["requests"].add_column("stream_outcome", str)


@migrations(name="m005_monitor_judge")
def m005_monitor_judge(db: Database) -> None:
    # shadow_evals: what the LLM judge (agreement tier 3, only for pairs the answer and embedding
    # tiers cannot decide) cost for this pair; Store.savings counts it with the monitor's cost.
    db["shadow_evals"].add_column("judge_cost_usd", float)
    # alerts: the open-alert lookups every gateway worker runs each second.
    db["alerts"].create_index(["resolved_at", "kind"])
