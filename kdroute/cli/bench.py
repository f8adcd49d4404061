"""`kdroute bench`."""

from __future__ import annotations

from pathlib import Path

import typer

from kdroute.cli.common import console, err_console, state
from kdroute.errors import InputError

_ENDPOINT_HELP = ("OpenAI-compatible base URL ending in /v1 (vLLM, TGI, the kdroute gateway). "
                  "Evaluated with lm-eval's local-chat-completions (or local-completions, see "
                  "--endpoint-api); chat endpoints skip log-likelihood (multiple-choice) tasks.")


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _endpoint(role: str, url: str | None, model: str | None, api: str, key_env: str | None,
              tokenizer: str | None):
    if url is None:
        if model is not None:
            raise InputError(f"--{role}-model needs --{role}-endpoint URL")
        return None
    if not model:
        raise InputError(f"--{role}-endpoint needs --{role}-model NAME (the model field sent)")
    from kdroute.bench.models import endpoint

    return endpoint(role, url, model, api=api, api_key_env=key_env, tokenizer=tokenizer)


BENCH_HELP = (
    "Benchmark the student against the teacher with lm-evaluation-harness.\n\n"
    "Prints per task the teacher and student scores, retention (student/teacher), "
    "chance-corrected retention for multiple choice, the paired difference with its stderr and "
    "z-test p-value, and a verdict; then speed on the same prompts (generation tokens/s, latency "
    "p50/p95, parameters, peak memory, the student's speed-up).\n\n"
    "Results and every scored sample go to the ledger. The teacher's results are cached there "
    "(keyed by model fingerprint, task and version, lm-eval version, few-shot and limit) and "
    "reused. A report (report.md, retention.png, summary.json) goes to <output-dir>/<run id>/.\n\n"
    "Endpoints: --student-endpoint http://127.0.0.1:8000/v1 --student-model NAME benches any "
    "OpenAI-compatible server; --system-endpoint adds the routed system (the kdroute gateway) as "
    "a third model.\n\n"
    "Exit codes: 0 pass (or no --gate), 1 gate failed with --gate, 2 bad input or an unreachable "
    "model (the run is marked failed and keeps no rows)."
)


def register(app: typer.Typer) -> None:
    @app.command("bench", help=BENCH_HELP, short_help="Benchmark the student against the "
                 "teacher with lm-evaluation-harness.")
    def bench(
        ctx: typer.Context,
        tasks: str = typer.Option(None, "--tasks", "-t", help="Comma-separated lm-eval task or "
                                  "group names \\[default: bench.tasks, the kdroute_skills suite]."),
        include_path: Path = typer.Option(None, help="Folder of extra task YAMLs "
                                          "\\[default: bench.include_path]."),
        limit: int = typer.Option(None, min=1, help="Items per task \\[default: all]."),
        num_fewshot: int = typer.Option(None, min=0, help="Few-shot examples per prompt."),
        batch_size: int = typer.Option(None, min=1, help="Batch size of local models."),
        device: str = typer.Option(None, help="Local models: auto | cpu | cuda | cuda:N."),
        teacher: str = typer.Option(None, help="Teacher: hf:<dir> or a model string with "
                                    "\\[teacher].api_base \\[default: \\[teacher].model]."),
        student: str = typer.Option(None, help="Student, like --teacher "
                                    "\\[default: \\[student].model]."),
        teacher_endpoint: str = typer.Option(None, metavar="URL", help="Teacher behind an "
                                             "OpenAI-compatible /v1 URL (see --student-endpoint)."),
        teacher_model: str = typer.Option(None, metavar="NAME",
                                          help="Model name sent to --teacher-endpoint."),
        student_endpoint: str = typer.Option(None, metavar="URL", help=_ENDPOINT_HELP),
        student_model: str = typer.Option(None, metavar="NAME",
                                          help="Model name sent to --student-endpoint."),
        system_endpoint: str = typer.Option(None, metavar="URL", help="Also bench the routed "
                                            "system (e.g. the kdroute gateway's /v1) against the "
                                            "teacher, like --student-endpoint."),
        system_model: str = typer.Option("kdroute/auto", metavar="NAME",
                                         help="Model name sent to --system-endpoint."),
        endpoint_api: str = typer.Option("chat", help="API of the flag endpoints: chat | "
                                         "completions."),
        endpoint_tokenizer: str = typer.Option(None, metavar="DIR", help="HF tokenizer of "
                                               "completions endpoints (enables log-likelihood)."),
        api_key_env: str = typer.Option(None, metavar="VAR", help="Environment variable "
                                        "holding the key of the flag endpoints."),
        gate: bool = typer.Option(False, "--gate", help="Exit 1 when the release gate fails."),
        min_retention: float = typer.Option(None, min=0.0, max=1.0, help="Gate: lowest "
                                            "student/teacher score \\[default: "
                                            "bench.min_retention]."),
        gate_on: str = typer.Option(None, help="Gate each task or their mean: each | mean."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Evaluate the teacher even if "
                                      "the ledger holds its results."),
        no_speed: bool = typer.Option(False, "--no-speed", help="Skip the speed test."),
        speed_prompts: int = typer.Option(None, min=1, help="Prompts of the speed test."),
        output_dir: Path = typer.Option(None, help="Reports go to <dir>/<run id>/ "
                                        "\\[default: bench.output_dir]."),
    ) -> None:
        """Benchmark the student against the teacher with lm-evaluation-harness."""
        from kdroute.bench import run_bench
        from kdroute.bench.report import tables

        if endpoint_api not in ("chat", "completions"):
            raise InputError(f"--endpoint-api {endpoint_api!r}: expected chat or completions")
        if gate_on is not None and gate_on not in ("each", "mean"):
            raise InputError(f"--gate-on {gate_on!r}: expected each or mean")
        st = state(ctx)
        settings = st.settings
        flags = (endpoint_api, api_key_env, endpoint_tokenizer)
        models = {
            "teacher": _endpoint("teacher", teacher_endpoint, teacher_model, *flags) or teacher,
            "student": _endpoint("student", student_endpoint, student_model, *flags) or student,
            "system": _endpoint("system", system_endpoint, system_model if system_endpoint
                                else None, *flags),
        }
        with st.store() as store:
            result = run_bench(
                settings, store, **models, tasks=_csv(tasks),
                include_path=include_path, output_dir=output_dir,  # flags: relative to cwd
                limit=limit, num_fewshot=num_fewshot, batch_size=batch_size, device=device,
                min_retention=min_retention, gate_on=gate_on, use_cache=not no_cache,
                measure_speed=not no_speed, speed_prompts=speed_prompts,
                progress=lambda msg: err_console.print(f"[dim]{msg}[/]"))
        for table in tables(result):
            console.print(table)
        line = result.gate.line()
        console.print(f"[{'green' if result.gate.passed else 'red'}]{line}[/]", highlight=False)
        if result.report_dir is not None:
            console.print(f"report: {result.report_dir / 'report.md'}", highlight=False)
        if gate and not result.gate.passed:
            raise typer.Exit(1)
