"""``usage``: reports and replays."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import click

from billingproxy.cli.output import emit, json_option, table, tenant_store, utc
from billingproxy.config import cloud_logging_target, database_url
from billingproxy.errors import InvalidInput
from billingproxy.metering import (
    ExportRead,
    UnreadableExport,
    logging_client,
    read_cloud_logging,
    read_path,
    replay_records,
    usage_report,
)
from billingproxy.metering.reports import attribution_report, plain

__all__ = ["command"]


@click.group("usage")
def command() -> None:
    """Usage reports and replays."""


@command.command("report")
@click.option("--tenant", "tenant_ref", required=True, help="Tenant id or name.")
@click.option("--from", "start", type=click.DateTime(), default=None, help="Start (UTC), inclusive; this month's.")
@click.option("--to", "end", type=click.DateTime(), default=None, help="End (UTC), exclusive; now.")
@click.option(
    "--by",
    type=click.Choice(["model", "end-user", "tag", "key"]),
    default="model",
    show_default=True,
    help="Break down by model (from the rows) or by end user, tag or key (whole UTC days, from the rollup).",
)
@json_option
def usage_report_command(tenant_ref: str, start: datetime | None, end: datetime | None, by: str, as_json: bool) -> None:
    """Usage and cost for one tenant over [from, to), per model, end user, tag or key."""
    now = datetime.now(UTC)
    start = utc(start) or now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = utc(end) or now + timedelta(seconds=1)
    if end <= start:
        raise click.ClickException("--to must be after --from")
    with tenant_store() as store:
        found = store.get_tenant(tenant_ref)
        if by != "model":
            _dimension_report(store.conn, found, by.replace("-", "_"), start, end, as_json)
            return
        report = usage_report(store.conn, found.id, start, end)

    def human() -> None:
        click.echo(f"{found.name} ({found.id})  {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC")
        columns = ["model", "requests", "failures", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"]
        table(report.models, columns)
        click.echo(f"total cost: {plain(report.total_cost_usd)} USD")

    emit(report.to_json(), as_json, human)


def _dimension_report(conn, found, by: str, start: datetime, end: datetime, as_json: bool) -> None:
    """The rollup is per UTC day: a partial last day counts whole (said in the header)."""
    last = end.date() if end.time() == time(0) else end.date() + timedelta(days=1)
    report = attribution_report(conn, found.id, by, start.date(), last)

    def human() -> None:
        click.echo(f"{found.name} ({found.id})  by {by}  {report.start} .. {report.end} (UTC days, end exclusive)")
        columns = ["value", "requests", "failures", "rejected", "total_tokens", "cost_usd"]
        table(report.rows, columns)
        click.echo(
            f"total cost: {plain(report.total_cost_usd)} USD"
            + (" (a request counts under each tag)" if by == "tag" else "")
        )

    emit(report.to_json(), as_json, human)


@command.command("replay")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--from-cloud-logging", "from_cloud_logging", is_flag=True, help="Read request lines from the Logging API."
)
@click.option("--since", type=click.DateTime(), default=None, help="With --from-cloud-logging: from (UTC).")
@click.option("--until", type=click.DateTime(), default=None, help="With --from-cloud-logging: until (UTC).")
@click.option("--project", default=None, help="With --from-cloud-logging: the project (else GOOGLE_CLOUD_PROJECT).")
@json_option
def usage_replay(
    files: tuple[str, ...],
    from_cloud_logging: bool,
    since: datetime | None,
    until: datetime | None,
    project: str | None,
    as_json: bool,
) -> None:
    """Restore usage rows from spill files, our stdout lines (NDJSON), `gcloud logging read
    --format=json` exports, BigQuery sink rows, or the Cloud Logging API; rows already stored are
    skipped. Exit 1 when any input (or line) cannot be read."""
    if from_cloud_logging == bool(files):
        raise click.UsageError("give export files, or --from-cloud-logging --since … --until …")
    export = ExportRead()
    unreadable_files: list[str] = []
    if from_cloud_logging:
        if since is None or until is None:
            raise click.UsageError("--from-cloud-logging needs --since and --until")
        start, end = utc(since), utc(until)
        if end <= start:
            raise click.UsageError("--until must be after --since")
        project, endpoint = cloud_logging_target(project)
        export = read_cloud_logging(logging_client(project, endpoint), project, start, end)
    for name in files:
        try:
            export.merge(read_path(name))
        except UnreadableExport as exc:
            unreadable_files.append(name)
            export.errors.append(exc.message)
    read, inserted = replay_records(database_url(), export.records)
    counts = {
        "read": export.read,
        "records": read,
        "inserted": inserted,
        "skipped": read - inserted,
        "unreadable": export.unreadable + len(unreadable_files),
        "not_usage": export.not_usage,
        "invalid": export.invalid,
        "format": export.format,
    }
    emit(
        counts,
        as_json,
        lambda: click.echo(
            f"read {export.read} entries ({export.format}): {read} usage records, inserted {inserted}, "
            f"skipped {read - inserted} already stored, unreadable {counts['unreadable']}, "
            f"invalid {export.invalid}, not usage {export.not_usage}"
        ),
    )
    bad = counts["unreadable"] + export.invalid
    if bad or (export.read and not read):
        reasons = "; ".join(export.errors[:3]) or "no usage record in the input"
        raise InvalidInput(f"{bad} unreadable or invalid inputs ({reasons}); the readable records were stored")


@command.command("audit")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--since", type=click.DateTime(), required=True, help="Admitted from (UTC), inclusive.")
@click.option("--until", type=click.DateTime(), required=True, help="Admitted until (UTC), exclusive.")
@json_option
def usage_audit(files: tuple[str, ...], since: datetime, until: datetime, as_json: bool) -> None:
    """Put every request admitted in [since, until) (an "admitted" line in the proxies' stdout
    exports) on the ledger: its request line's row if the files have one, else an `interrupted` row
    (the instance died between the provider call and the record; cost per
    BILLINGPROXY_INTERRUPTED_POLICY). Then releases the budget doubt of the instances read whose
    leases expired by --until (killed). Idempotent."""
    from billingproxy.budgets.doubt import release_dead_holders
    from billingproxy.config import ProxySettings, interrupted_policy
    from billingproxy.metering import PriceTable
    from billingproxy.metering.audit import audit_files

    start, end = utc(since), utc(until)
    if end <= start:
        raise click.UsageError("--until must be after --since")
    result = audit_files(database_url(), files, start, end, PriceTable.from_config(), interrupted_policy())
    settings = ProxySettings.from_env()
    redis_url = settings.redis_url if settings.budget_store == "redis" else None
    # Every request of these instances up to `until` is on the ledger now: a killed one's budget
    # doubt (its lease expired by `until`) is no longer needed.
    released = release_dead_holders(database_url(), list(result.instances), end, redis_url)
    counts = {
        "admitted": result.admitted,
        "completed": result.completed,
        "interrupted": result.interrupted,
        "replayed": result.replayed,
        "budget_doubt_released": released,
    }
    emit(
        counts,
        as_json,
        lambda: click.echo(
            f"admitted {result.admitted}, completed {result.completed} ({result.replayed} rows replayed), "
            f"written as interrupted {result.interrupted}; budget doubt released on {released} leases"
        ),
    )
