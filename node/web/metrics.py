"""/metrics: the node's state for Prometheus (prometheus-client's text format), read at each scrape
from the store, its read tables, the audit log and the disk. docs/monitoring/ has a Grafana
dashboard and alert rules built on these names.

Counters are the store's own totals (they survive restarts, as Prometheus counters may reset).
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from lienthong.sync import completeness as comp
from lienthong.sync import records
from lienthong.sync.schedule import Schedules, containing, today_in_vietnam
from lienthong.sync.units import Units

from .. import sink_task
from ..intake import DROP_TO_COMMIT
from . import api
from .context import CONSOLE, Console


class NodeCollector(Collector):
    """Everything /metrics shows, gathered at each scrape (blocking: called in a worker thread)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def collect(self) -> Iterator[Any]:
        console, now = self.console, time.time()
        store, settings = console.store, console.settings
        store.fresh_read_tables()  # units, feedback and completeness come from the read tables
        db = store.reader()
        node = settings.node.id

        kinds = GaugeMetricFamily("lienthong_records", "Records held (not withdrawn), per kind.", labels=["kind"])
        for kind, count in api.record_counts(store).items():
            kinds.add_metric([kind], count)
        yield kinds
        yield GaugeMetricFamily("lienthong_changelog_head", "The last sequence of this node's change log.", value=store.head())

        connected = GaugeMetricFamily("lienthong_child_connected", "1 while the child's stream is open.", labels=["child"])
        contact = GaugeMetricFamily(
            "lienthong_child_last_contact_age_seconds", "Seconds since the child was last heard from.", labels=["child"]
        )
        queued = GaugeMetricFamily("lienthong_child_lag_records", "Records queued here for the child, not yet sent down.", labels=["child"])
        applied = CounterMetricFamily("lienthong_child_records_applied", "Records received from the child and applied.", labels=["child"])
        rejected = CounterMetricFamily("lienthong_child_records_rejected", "Records from the child refused.", labels=["child"])
        quarantined = GaugeMetricFamily("lienthong_child_records_quarantined", "Refused records kept in quarantine.", labels=["child"])
        held = dict(db.execute("SELECT child, count(*) FROM quarantine GROUP BY child").fetchall())
        for row in db.execute(
            "SELECT c.child, c.connected, c.last_contact, c.received, c.rejected, "
            "(SELECT count(*) FROM downqueue d WHERE d.child = c.child) FROM children c"
        ):
            child, is_connected, last, received, refused, down = row
            connected.add_metric([child], 1 if is_connected and console.runtime else 0)
            contact.add_metric([child], now - last if last else float("inf"))
            queued.add_metric([child], down)
            applied.add_metric([child], received)
            rejected.add_metric([child], refused)
            quarantined.add_metric([child], held.get(child, 0))
        silent = GaugeMetricFamily(
            "lienthong_silent_units", "Units directly below this node never heard from, or not within web.silence_minutes."
        )
        silence = settings.web.silence_minutes * 60
        expected = {code for (code,) in db.execute("SELECT code FROM units WHERE parent = ?", (node,))}
        heard = dict(db.execute("SELECT child, last_contact FROM children").fetchall())
        silent.add_metric([], sum(1 for code in expected if not heard.get(code) or now - heard[code] > silence))
        yield from (connected, contact, queued, applied, rejected, quarantined, silent)

        if settings.parent.address:
            up = db.execute("SELECT acked, sent, acked_records, received, connected, last_contact FROM uplink").fetchone()
            acked, sent, acked_records, received, is_connected, last = up
            pending = db.execute("SELECT count(*) FROM changelog WHERE seq > ? AND up = 1", (acked,)).fetchone()[0]
            yield GaugeMetricFamily("lienthong_parent_lag_records", "Change-log entries the parent has not acknowledged.", value=pending)
            yield GaugeMetricFamily(
                "lienthong_parent_last_contact_age_seconds",
                "Seconds since the parent last acknowledged or sent.",
                value=now - last if last else float("inf"),
            )
            yield GaugeMetricFamily(
                "lienthong_parent_connected", "1 while the stream to the parent is open.", value=int(bool(is_connected))
            )
            yield CounterMetricFamily("lienthong_parent_records_sent", "Records sent to the parent.", value=sent)
            yield CounterMetricFamily("lienthong_parent_records_acknowledged", "Records the parent acknowledged.", value=acked_records)
            yield CounterMetricFamily("lienthong_parent_records_received", "Records received from the parent.", value=received)
            refused = db.execute("SELECT count(*) FROM refused").fetchone()[0]
            yield GaugeMetricFamily("lienthong_parent_records_refused", "Records of this node the parent refused.", value=refused)

        files = GaugeMetricFamily("lienthong_inbox_files", "Files taken from the inboxes, per receipt status.", labels=["status"])
        counts = dict(db.execute("SELECT status, count(*) FROM files GROUP BY status").fetchall())
        for status in ("success", "warning", "error"):
            files.add_metric([status], counts.get(status, 0))
        yield files
        rows = db.execute("SELECT coalesce(sum(refused), 0) FROM files").fetchone()[0]
        yield CounterMetricFamily("lienthong_inbox_rows_refused", "Rows refused in files taken from the inboxes.", value=rows)

        open_, overdue = db.execute(
            "SELECT coalesce(sum(is_open), 0), coalesce(sum(is_open = 1 AND due_ts < ?), 0) FROM feedback_items", (now,)
        ).fetchone()
        yield GaugeMetricFamily("lienthong_feedback_open", "Feedback items not yet resolved or closed.", value=open_)
        yield GaugeMetricFamily("lienthong_feedback_overdue", "Open feedback items past their deadline.", value=overdue)

        yield self._completeness()

        cert = console.node_dir / settings.tls.cert
        if cert.exists():
            from ..trust.tls import certificate_summary

            expiry = dt.datetime.fromisoformat(certificate_summary(cert)["not_after"]).timestamp()
            yield GaugeMetricFamily("lienthong_certificate_expiry_timestamp_seconds", "When this node's certificate expires.", value=expiry)
        if console.audit is not None:
            yield GaugeMetricFamily("lienthong_audit_chain_length", "Entries in the node's audit log.", value=console.audit.head()[0])
        disk = shutil.disk_usage(console.node_dir)
        yield GaugeMetricFamily("lienthong_disk_free_bytes", "Free space on the disk holding the node directory.", value=disk.free)
        yield GaugeMetricFamily("lienthong_store_bytes", "Size of the store file.", value=store.path.stat().st_size)
        yield from _sink(console, store.head())

    def _completeness(self) -> GaugeMetricFamily:
        """Completeness (submitted / expected) per level for the current period of each schedule's period type."""
        metric = GaugeMetricFamily(
            "lienthong_completeness_ratio",
            "Reports submitted / expected for the current period, per unit level and period type.",
            labels=["level", "period_type", "period"],
        )
        store = self.console.store
        definitions = list(store.iter_records(records.DEFINITION))
        try:
            registry, schedules = Units.from_envelopes(definitions), Schedules.from_envelopes(definitions)
        except Exception:
            return metric  # a definition that cannot be read: the CLI names it
        today = today_in_vietnam()
        for kind in sorted({s.period_type for s in schedules}):
            period = containing(today, kind)
            result = comp.completeness(registry, list(schedules), api.submissions(store, None, period), period, today=today)
            for level, rates in result.levels().items():
                if rates.expected:
                    metric.add_metric([level, kind, period], rates.submitted / rates.expected)
        return metric


def registry_for(console: Console) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(console))
    registry.register(DROP_TO_COMMIT)  # observed by the node's intake (node/runtime.py)
    return registry


async def metrics(request: web.Request) -> web.Response:
    import asyncio

    console = request.app[CONSOLE]
    if "metrics_registry" not in console.runtime:
        console.runtime["metrics_registry"] = registry_for(console)
    body = await asyncio.to_thread(generate_latest, console.runtime["metrics_registry"])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _sink(console: Console, head: int) -> Iterator[Any]:
    """The PostgreSQL sink, when the node has one (node/sink_task.py writes its state)."""
    state = sink_task.state_of(console.node_dir, console.settings, head)
    if state is None:
        return
    yield GaugeMetricFamily(
        "lienthong_sink_up", "1 while the PostgreSQL sink's last step succeeded, 0 while it retries.", value=int(state["state"] == "ok")
    )
    if state["lag"] is not None:
        yield GaugeMetricFamily("lienthong_sink_lag_entries", "Change-log entries not yet in PostgreSQL.", value=state["lag"])
    yield CounterMetricFamily(
        "lienthong_sink_rows", "Rows the sink copied into PostgreSQL since the node started.", value=state["rows"] or 0
    )
    if state["last_success"]:
        when = dt.datetime.fromisoformat(state["last_success"].replace("Z", "+00:00")).timestamp()
        yield GaugeMetricFamily("lienthong_sink_last_success_timestamp_seconds", "When the sink's last step committed.", value=when)
