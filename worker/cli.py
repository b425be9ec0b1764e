"""The `loyalty-relay` command line: run, ingest, check, demo, dlq, replay, bench, simulate."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import click

from worker.config import Settings, load_settings
from worker.errors import ConfigError

CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file; environment variables override it.",
)


def _settings(config_file: str | None) -> Settings:
    try:
        return load_settings(config_file)
    except ConfigError as exc:
        raise click.exceptions.Exit(_fail(exc)) from None


def _fail(exc: ConfigError) -> int:
    click.echo(f"loyalty-relay: configuration error: {exc}", err=True)
    return 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="loyalty-relay")
def cli() -> None:
    """Stream loyalty events from Kafka to Braze, MoEngage, SessionM and Kognitiv."""


@cli.command()
@CONFIG_OPTION
def run(config_file: str | None) -> None:
    """Run the worker until SIGTERM/SIGINT, then drain, commit and exit."""
    from worker.app import run_worker
    from worker.observability.logging import configure_logging
    from worker.observability.redact import Redactor

    settings = _settings(config_file)
    configure_logging(settings.worker.log_level, redactor=Redactor(settings.secrets))
    code = _run_async(run_worker(settings))
    raise click.exceptions.Exit(code)


@cli.command()
@CONFIG_OPTION
def ingest(config_file: str | None) -> None:
    """Accept events and Kognitiv webhooks over HTTP into the topics (INGEST_PORT)."""
    from worker.ingest.config import load_ingest_config
    from worker.ingest.service import run_ingest
    from worker.observability.logging import configure_logging
    from worker.observability.redact import Redactor

    try:
        config = load_ingest_config(config_file)
    except ConfigError as exc:
        raise click.exceptions.Exit(_fail(exc)) from None
    configure_logging(config.log_level, redactor=Redactor(config.secrets))
    raise click.exceptions.Exit(_run_async(run_ingest(config)))


@cli.command()
@CONFIG_OPTION
@click.option("--connect", is_flag=True, help="Also test the broker and each destination.")
def check(config_file: str | None, connect: bool) -> None:
    """Validate the configuration and print the routing table; exit 0 or 2."""
    from worker.check import run_check

    raise click.exceptions.Exit(run_check(config_file, connect=connect))


@cli.command()
@click.option("--events", default=60, show_default=True, help="Good events to produce.")
@click.option("--timeout", default=60.0, show_default=True, help="Give up after this long.")
def demo(events: int, timeout: float) -> None:
    """Embedded broker + simulators + worker, a realistic sample, and a summary."""
    from worker.devtools.demo import run_demo

    raise click.exceptions.Exit(_run_async(run_demo(events=events, timeout=timeout)))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port-base",
    default=9200,
    show_default=True,
    help="Braze, MoEngage, SessionM, Kognitiv on base..base+3.",
)
@click.option("--no-rate-limits", is_flag=True, help="Turn the simulated rate limits off.")
@click.option(
    "--lean", is_flag=True, help="Braze and MoEngage only, parse-count-answer (for bench)."
)
def simulate(host: str, port_base: int, no_rate_limits: bool, lean: bool) -> None:
    """Run the four destination simulators until interrupted (for local trials)."""
    from worker.devtools.simulators.runner import serve

    serve(host=host, port_base=port_base, rate_limits=not no_rate_limits, lean=lean)


@cli.command("produce-sample")
@click.option("--count", default=100, show_default=True, help="Good events to produce.")
@click.option("--bad", default=5, show_default=True, help="Malformed events to add.")
@click.option("--seed", default=7, show_default=True)
def produce_sample(count: int, bad: int, seed: int) -> None:
    """Write a realistic sample of every event type (plus some bad ones) to the topics."""
    from worker.devtools.sample import produce_sample as produce

    settings_kafka = _kafka_only()
    asyncio.run(produce(settings_kafka, count=count, bad=bad, seed=seed))


def _filter_options(function: Any) -> Any:
    options = [
        click.option("--topic", "topics", multiple=True, help="Source or .dlq topic (repeatable)."),
        click.option("--destination", help="dlq.destination: braze, moengage, ..., or '*'."),
        click.option("--reason", help="dlq.reason, e.g. permanent_http_error."),
        click.option("--http-status", help="dlq.http_status, e.g. 401."),
        click.option("--since", help="Failed at or after: RFC 3339 or relative (30m, 2h, 7d)."),
        click.option("--until", help="Failed at or before: RFC 3339 or relative."),
        click.option("--event-type", help="dlq.event_type."),
        click.option("--member-id", help="The record key."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _dlq_filter(**values: Any) -> Any:
    from worker.dlq_read import DlqFilter, parse_when

    try:
        since = parse_when(values["since"]) if values.get("since") else None
        until = parse_when(values["until"]) if values.get("until") else None
    except ValueError as exc:
        raise click.BadParameter(f"--since/--until: {exc}") from None
    return DlqFilter(
        destination=values.get("destination"),
        reason=values.get("reason"),
        http_status=values.get("http_status"),
        since=since,
        until=until,
        event_type=values.get("event_type"),
        member_id=values.get("member_id"),
    )


def _tool_settings(config_file: str | None) -> Settings:
    try:
        return load_settings(config_file, require_destination=False)
    except ConfigError as exc:
        raise click.exceptions.Exit(_fail(exc)) from None


@cli.group()
def dlq() -> None:
    """Dead-letter topics."""


@dlq.command("inspect")
@CONFIG_OPTION
@_filter_options
@click.option("--show", default=0, show_default=True, help="Print the first N matching records.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def dlq_inspect(
    config_file: str | None, topics: tuple[str, ...], show: int, as_json: bool, **filters: Any
) -> None:
    """Count dead letters by topic, destination, reason and HTTP status; show some."""
    import orjson
    from rich.console import Console
    from rich.table import Table

    from worker.dlq_inspect import inspect
    from worker.dlq_read import ReadIncomplete
    from worker.replay_ledger import LedgerUnavailable

    settings = _tool_settings(config_file)
    try:
        result = asyncio.run(inspect(settings, list(topics) or None, _dlq_filter(**filters), show))
    except (ReadIncomplete, LedgerUnavailable) as exc:
        click.echo(f"loyalty-relay dlq inspect: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    if as_json:
        click.echo(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"Dead letters ({result.matched} of {result.total} match)")
    for column in (
        "topic",
        "destination",
        "reason",
        "http",
        "count",
        "replayed",
        "first failure",
        "last failure",
    ):
        table.add_column(column)
    for g in sorted(result.groups.values(), key=lambda g: (-g.count, g.topic)):
        table.add_row(
            g.topic,
            g.destination,
            g.reason,
            g.http_status,
            str(g.count),
            str(g.replayed),
            g.first_failed_at,
            g.last_failed_at,
        )
    console.print(table)
    for record in result.records:
        console.print_json(orjson.dumps(record).decode())


@cli.command()
@CONFIG_OPTION
@_filter_options
@click.option(
    "--dry-run", is_flag=True, help="Count and list what would be replayed; change nothing."
)
@click.option("--limit", type=int, default=None, help="Redrive at most N records.")
@click.option("--rate", type=float, default=None, help="Records per second.")
@click.option(
    "--again",
    "--from-beginning",
    "again",
    is_flag=True,
    help="Redrive dead letters even if an earlier replay already did.",
)
@click.option(
    "--include-superseded",
    is_flag=True,
    help="Also redrive state events a newer event of the same member replaced.",
)
@click.option("--replay-id", default=None, help="Label this run (default: a random id).")
@click.option(
    "--max-replays", default=3, show_default=True, help="Skip records replayed this often."
)
@click.option(
    "--lease",
    "lease_seconds",
    type=click.FloatRange(min=10),
    default=300.0,
    show_default=True,
    help="Seconds after which a claim of a run that died may be taken over.",
)
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait for the pool to deliver."
)
@click.option("--wait-timeout", default=300.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def replay(
    config_file: str | None,
    topics: tuple[str, ...],
    dry_run: bool,
    limit: int | None,
    rate: float | None,
    again: bool,
    include_superseded: bool,
    replay_id: str | None,
    max_replays: int,
    lease_seconds: float,
    wait: bool,
    wait_timeout: float,
    as_json: bool,
    **filters: Any,
) -> None:
    """Send dead letters back through the live pool, each once, to the failed destination only."""
    import orjson

    from worker.dlq_read import ReadIncomplete
    from worker.observability.logging import configure_logging
    from worker.redrive import run_replay
    from worker.replay_ledger import LedgerUnavailable

    settings = _tool_settings(config_file)
    configure_logging("warning" if as_json else "info")
    try:
        summary = asyncio.run(
            run_replay(
                settings,
                topics=list(topics) or None,
                dlq_filter=_dlq_filter(**filters),
                dry_run=dry_run,
                limit=limit,
                rate=rate,
                again=again,
                include_superseded=include_superseded,
                max_replays=max_replays,
                replay_id=replay_id,
                lease_seconds=lease_seconds,
                wait=wait,
                wait_timeout=wait_timeout,
            )
        )
    except (ReadIncomplete, LedgerUnavailable) as exc:
        click.echo(f"loyalty-relay replay: {exc}; nothing more was sent", err=True)
        raise click.exceptions.Exit(1) from None
    if as_json:
        click.echo(orjson.dumps(summary.as_dict()).decode())
    else:
        verb = "would redrive" if dry_run else "redrove"
        click.echo(f"replay {summary.replay_id}: {verb} {summary.redriven}")
        for item in summary.selected:
            click.echo(f"  {item}")
        if summary.delivered is not None:
            click.echo(
                f"  delivered {summary.delivered}, dead-lettered again "
                f"{summary.dead_lettered_again}"
            )
        elif not dry_run and summary.redriven:
            click.echo(f"  delivery pending: {summary.pending} handed to the live pool")
        click.echo(
            f"  skipped: already replayed {summary.already_replayed}, claimed by another run "
            f"{summary.claimed_by_another_run}, superseded {summary.superseded}, by filter "
            f"{summary.skipped_by_filter}, at --max-replays {summary.skipped_at_max_replays}, "
            f"truncated stubs {summary.skipped_truncated}"
            + (f", over --limit {summary.left_by_limit}" if summary.left_by_limit else "")
        )
    raise click.exceptions.Exit(130 if summary.interrupted else 0)


@cli.command()
@click.option("--events", default=200_000, show_default=True)
@click.option(
    "--mix",
    default="rewards_issued=0.60,offer_issued=0.25,member_enrolled=0.15",
    show_default=True,
    help="event_type=weight pairs.",
)
@click.option("--members", default=5000, show_default=True)
@click.option("--partitions", default=6, show_default=True)
@click.option("--half-load-seconds", default=10.0, show_default=True)
@click.option("--skip-baseline", is_flag=True)
@click.option(
    "--strict-simulators",
    is_flag=True,
    help="Measure against the strict simulators (the tests' ones) instead of the lean ones.",
)
@click.option("--json", "json_path", default=None, help="Write every figure to this file.")
def bench(
    events: int,
    mix: str,
    members: int,
    partitions: int,
    half_load_seconds: float,
    skip_baseline: bool,
    strict_simulators: bool,
    json_path: str | None,
) -> None:
    """Measure the worker against a bare consumer and the one-request-per-event webhooks."""
    from worker.devtools.bench import run_bench

    try:
        weights = {k.strip(): float(v) for k, v in (p.split("=") for p in mix.split(","))}
    except ValueError:
        raise click.BadParameter(
            "--mix must look like rewards_issued=0.6,offer_issued=0.4"
        ) from None
    asyncio.run(
        run_bench(
            events=events,
            mix=weights,
            members=members,
            partitions=partitions,
            half_load_seconds=half_load_seconds,
            skip_baseline=skip_baseline,
            lean_simulators=not strict_simulators,
            json_path=json_path,
        )
    )


def _kafka_only() -> Any:
    import os

    from worker.config import KafkaSettings

    return KafkaSettings(
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    )


def _run_async(coro: Any) -> int:
    try:
        import uvloop
    except ImportError:
        return int(asyncio.run(coro))
    return int(uvloop.run(coro))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        # with standalone_mode=False click returns an Exit's code instead of raising it
        result = cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except ConfigError as exc:
        return _fail(exc)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
