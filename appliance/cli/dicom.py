"""CLI for DICOM peers, the modality worklist and forwarding.

    pacs-appliance modality add|update|list|remove|echo
    pacs-appliance worklist add|list|remove
    pacs-appliance forward status|retry|drop
"""
from __future__ import annotations

import datetime
from pathlib import Path

import click

from ..records.peers import file_fingerprint
from .common import data_option, friendly_errors, open_appliance


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _cert(value: str) -> str:
    """--cert-fingerprint takes the fingerprint or the certificate file itself."""
    path = Path(value).expanduser() if value else None
    return file_fingerprint(path) if path is not None and path.is_file() else value


def _pin(peer) -> str:
    return f"; over TLS it must present the client certificate sha256 {peer.cert_fingerprint}" \
        if peer.cert_fingerprint else ""


@click.group()
def modality() -> None:
    """Known DICOM peers: modalities, workstations, other archives."""


@modality.command("add")
@data_option
@click.argument("ae_title")
@click.argument("host")
@click.argument("port", type=int)
@click.option("--description", default="", help="Free text, e.g. 'US room 2'.")
@click.option("--store/--no-store", default=True, show_default=True, help="May send images here.")
@click.option("--query/--no-query", default=True, show_default=True, help="May C-FIND and query the worklist.")
@click.option("--retrieve/--no-retrieve", default=True, show_default=True, help="May C-MOVE/C-GET from here.")
@click.option("--receive/--no-receive", default=True, show_default=True,
              help="May be a C-MOVE destination or forwarding target.")
@click.option("--tls/--no-tls", default=False, show_default=True,
              help="Call it over DICOM TLS (PORT is then its TLS port; its certificate must chain to [dicom] tls_ca).")
@click.option("--cert-fingerprint", "cert", default="", metavar="SHA256|FILE",
              help="Pin the TLS client certificate it must call us with: its SHA-256 fingerprint, or the "
                   "certificate file.")
@friendly_errors
def modality_add(data_dir: Path | None, ae_title: str, host: str, port: int, description: str, store: bool,
                 query: bool, retrieve: bool, receive: bool, tls: bool, cert: str) -> None:
    """Register a peer AE_TITLE listening at HOST PORT."""
    with open_appliance(data_dir) as app:
        first = not app.peers.list()
        peer = app.peers.add(ae_title, host, port, description, can_store=store, can_query=query,
                             can_retrieve=retrieve, can_receive_moves=receive, tls=tls,
                             cert_fingerprint=_cert(cert))
        click.echo(f"Registered {peer.ae_title} at {peer.host}:{peer.port}" + (" (DICOM TLS)" if peer.tls else "")
                   + _pin(peer))
        if first and not app.config.dicom.allowed_callers:
            click.echo("Note: with a peer registered, only registered peers (and [dicom] allowed_callers) may "
                       "now connect; register every modality that sends images here.")


@modality.command("update")
@data_option
@click.argument("ae_title")
@click.option("--host", default=None, help="New host or IP address.")
@click.option("--port", type=int, default=None, help="New port.")
@click.option("--description", default=None, help="New description.")
@click.option("--store/--no-store", default=None, help="May send images here.")
@click.option("--query/--no-query", default=None, help="May C-FIND and query the worklist.")
@click.option("--retrieve/--no-retrieve", default=None, help="May C-MOVE/C-GET from here.")
@click.option("--receive/--no-receive", default=None, help="May be a C-MOVE destination or forwarding target.")
@click.option("--tls/--no-tls", default=None, help="Call it over DICOM TLS (give its TLS port with --port).")
@click.option("--cert-fingerprint", "cert", default=None, metavar="SHA256|FILE",
              help="Pin the TLS client certificate it must call us with (SHA-256 fingerprint or the certificate "
                   "file); \"\" removes the pin.")
@friendly_errors
def modality_update(data_dir: Path | None, ae_title: str, host, port, description, store, query, retrieve, receive,
                    tls, cert) -> None:
    """Change a registered peer; options not given stay as they are."""
    given = {"host": host, "port": port, "description": description, "can_store": store, "can_query": query,
             "can_retrieve": retrieve, "can_receive_moves": receive, "tls": tls,
             "cert_fingerprint": None if cert is None else _cert(cert)}
    with open_appliance(data_dir) as app:
        peer = app.peers.update(ae_title, **{k: v for k, v in given.items() if v is not None})
        click.echo(f"Updated {peer.ae_title} at {peer.host}:{peer.port}" + (" (DICOM TLS)" if peer.tls else "")
                   + _pin(peer))


@modality.command("list")
@data_option
@friendly_errors
def modality_list(data_dir: Path | None) -> None:
    """List registered peers and what each may do."""
    with open_appliance(data_dir) as app:
        peers = app.peers.list()
        if not peers:
            click.echo("No peers registered (any caller may connect while [dicom] allowed_callers is empty too).")
            return
        click.echo(f"{'AE title':16}  {'host':24} {'port':>5}  tls  store query retrieve receive  description")
        for p in peers:
            click.echo(f"{p.ae_title:16}  {p.host:24} {p.port:>5}  {_yes(p.tls):3}  {_yes(p.can_store):5} "
                       f"{_yes(p.can_query):5} {_yes(p.can_retrieve):8} {_yes(p.can_receive_moves):7}  {p.description}")


@modality.command("remove")
@data_option
@click.argument("ae_title")
@friendly_errors
def modality_remove(data_dir: Path | None, ae_title: str) -> None:
    """Forget a registered peer."""
    with open_appliance(data_dir) as app:
        app.peers.remove(ae_title)
        click.echo(f"Removed {ae_title}")


@modality.command("echo")
@data_option
@click.argument("ae_title")
@friendly_errors
def modality_echo(data_dir: Path | None, ae_title: str) -> None:
    """C-ECHO a registered peer: is it up and does it accept us?"""
    with open_appliance(data_dir) as app:
        result = app.peers.echo(ae_title)
    click.echo(f"{'OK' if result.ok else 'FAILED'}: {result.message} ({result.millis:.0f} ms)")
    if not result.ok:
        raise SystemExit(1)


@click.group()
def worklist() -> None:
    """The modality worklist: scheduled procedure steps modalities can query."""


@worklist.command("add")
@data_option
@click.option("--patient-name", required=True, help="DICOM form, e.g. DOE^JANE.")
@click.option("--patient-id", required=True)
@click.option("--birth-date", default="", help="YYYYMMDD")
@click.option("--sex", default="", type=click.Choice(["", "M", "F", "O"]))
@click.option("--accession", default="")
@click.option("--procedure", "requested_procedure_description", default="", help="Requested procedure.")
@click.option("--procedure-id", "requested_procedure_id", default="")
@click.option("--step-id", default="")
@click.option("--step-description", default="")
@click.option("--station-ae", default="", help="AE title of the modality that should do it.")
@click.option("--modality", required=True, help="e.g. US, DX, CR, CT.")
@click.option("--date", "scheduled_date", default=None, help="YYYYMMDD (default: today).")
@click.option("--time", "scheduled_time", default="", help="HHMM or HHMMSS.")
@click.option("--physician", "performing_physician", default="", help="Performing physician, e.g. SMITH^ANN.")
@click.option("--referring", "referring_physician", default="")
@click.option("--study-uid", default="", help="Study Instance UID to use (default: a new one).")
@friendly_errors
def worklist_add(data_dir: Path | None, **fields) -> None:
    """Schedule a procedure step."""
    fields["scheduled_date"] = fields["scheduled_date"] or datetime.date.today().strftime("%Y%m%d")
    with open_appliance(data_dir) as app:
        item = app.worklist.add(**fields)
    click.echo(f"Added worklist entry {item.id} (accession {item.accession or '-'}, study {item.study_uid})")


@worklist.command("list")
@data_option
@click.option("--date", default="", help="DICOM date or range, e.g. 20260101 or 20260101-20260107.")
@click.option("--station-ae", default="")
@click.option("--modality", default="")
@click.option("--status", default="", help="SCHEDULED, IN PROGRESS, COMPLETED or DISCONTINUED.")
@friendly_errors
def worklist_list(data_dir: Path | None, date: str, station_ae: str, modality: str, status: str) -> None:
    """List worklist entries with their MPPS status."""
    with open_appliance(data_dir) as app:
        items = app.worklist.list(date=date, station_ae=station_ae, modality=modality, status=status)
        if not items:
            click.echo("No worklist entries.")
            return
        click.echo(f"{'id':>5}  {'date':8} {'time':6}  {'mod':4} {'station':16} {'status':12}  {'accession':16} "
                   "patient")
        for i in items:
            click.echo(f"{i.id:>5}  {i.scheduled_date:8} {i.scheduled_time[:6]:6}  {i.modality:4} "
                       f"{i.station_ae or '-':16} {i.status:12}  {i.accession or '-':16} "
                       f"{i.patient_name} ({i.patient_id})")


@worklist.command("remove")
@data_option
@click.argument("item_id", type=int)
@friendly_errors
def worklist_remove(data_dir: Path | None, item_id: int) -> None:
    """Remove a worklist entry."""
    with open_appliance(data_dir) as app:
        app.worklist.remove(item_id)
    click.echo(f"Removed worklist entry {item_id}")


@click.group()
def forward() -> None:
    """Auto-forwarding to registered peers ([forward] rules)."""


@forward.command("status")
@data_option
@friendly_errors
def forward_status(data_dir: Path | None) -> None:
    """The forwarding queue per destination: pending, sent, failed, next attempt, last error."""
    with open_appliance(data_dir) as app:
        rules = app.config.forward.rules
        click.echo("Rules: " + ("; ".join(rules) if rules else "none ([forward] rules is empty)"))
        rows = app.forwarder.status()
        if not rows:
            click.echo("Queue empty.")
            return
        click.echo(f"{'destination':16} {'pending':>7} {'sent':>7} {'failed':>7} {'dropped':>7}  next attempt (UTC)"
                   "    last sent (UTC)      last error")
        for r in rows:
            nxt = r["next_attempt_at"].strftime("%Y-%m-%d %H:%M:%S") if r["next_attempt_at"] else "-"
            last = str(r["last_sent_at"])[:19] if r["last_sent_at"] else "-"
            click.echo(f"{r['destination']:16} {r['pending']:>7} {r['sent']:>7} {r['failed']:>7} {r['dropped']:>7}  "
                       f"{nxt:20} {last:20} {r['last_error'] or '-'}")
        failed = app.forwarder.failed()
        if failed:
            click.echo("\nFailed jobs (`forward retry` queues them again, `forward drop` removes them):")
            for job in failed:
                click.echo(f"  job {job['id']:<6} {job['destination']:16} {job['sop_uid']}  {job['last_error']}")


@forward.command("retry")
@data_option
@click.argument("destination", required=False)
@friendly_errors
def forward_retry(data_dir: Path | None, destination: str | None) -> None:
    """Queue failed jobs again (all, or those for DESTINATION)."""
    with open_appliance(data_dir) as app:
        count = app.forwarder.retry_failed(destination)
    click.echo(f"{count} job(s) queued again")


@forward.command("drop")
@data_option
@click.argument("job_id", type=int, required=False)
@click.option("--failed", "all_failed", is_flag=True, help="Drop every failed job (with --destination: of that peer).")
@click.option("--destination", help="With --failed: only the jobs for this AE title.")
@friendly_errors
def forward_drop(data_dir: Path | None, job_id: int | None, all_failed: bool, destination: str | None) -> None:
    """Remove job JOB_ID (see `forward status`), or every failed job with --failed, from the queue."""
    if (job_id is None) == (not all_failed):
        raise click.UsageError("give a JOB_ID or --failed (not both)")
    with open_appliance(data_dir) as app:
        count = app.forwarder.drop(job_id, destination)
    if job_id is not None and count == 0:
        raise click.ClickException(f"no job {job_id} waiting in the forwarding queue (see `forward status`)")
    click.echo(f"{count} job(s) dropped")


@click.command("conformance")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the statement to this file (docs/CONFORMANCE.md in the repository) instead of stdout.")
def conformance(output: Path | None) -> None:
    """Print the DICOM Conformance Statement, generated from the node's own tables."""
    from ..dicom.conformance import render

    text = render()
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"Wrote {output}")
