"""The `loyalty-relay` command line: run, check, demo, dlq inspect, replay, bench, simulate."""

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
    from worker.demo import run_demo

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
def simulate(host: str, port_base: int, no_rate_limits: bool) -> None:
    """Run the four destination simulators until interrupted (for local trials)."""
    from worker.simulators.runner import serve

    serve(host=host, port_base=port_base, rate_limits=not no_rate_limits)


@cli.command("produce-sample")
@click.option("--count", default=100, show_default=True, help="Good events to produce.")
@click.option("--bad", default=5, show_default=True, help="Malformed events to add.")
@click.option("--seed", default=7, show_default=True)
def produce_sample(count: int, bad: int, seed: int) -> None:
    """Write a realistic sample of every event type (plus some bad ones) to the topics."""
    from worker.sample import produce_sample as produce

    settings_kafka = _kafka_only()
    asyncio.run(produce(settings_kafka, count=count, bad=bad, seed=seed))


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
