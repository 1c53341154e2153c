"""Prometheus metrics: event counters from the pipeline, job gauges from the journal.

Counters and histograms are fed by `JobEvents` (and the webhook sender) on the event
loop and start from zero with each process, as Prometheus expects. Gauges about jobs and
pending notifications are read from the journal at scrape time (one GROUP BY), so they are
right immediately after a restart, and so is the last success, read from the journal at
start. prometheus-client serves /metrics from its own thread; that thread reads the
journal through its own read-only connection, never through the event loop's. Jobs of
folders not watched now (one-shot `vaultdrop upload`s, from any directory; folders
removed from the config) share one `folder="(other)"`: a label per such directory would
grow the series without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from . import __version__
from .config import listen_parts
from .errors import ConfigError
from .events import RETRY_REASONS, Observer
from .intake.completeness import WAIT_REASONS
from .job import ACTIVE, Job, JobState
from .journal import JournalStore, JournalUnavailable
from .logs import log

INGEST_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, float("inf"))
OUTCOMES = {JobState.DONE: "done", JobState.FAILED: "failed", JobState.SKIPPED: "skipped"}
OTHER_FOLDERS = "(other)"


class MetricsRecorder(Observer):
    """The counters, histogram and gauges the pipeline's events drive."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.ingest = Histogram("vaultdrop_ingest_seconds", "From the file settling to the vault confirming it",
                                ["folder"], buckets=INGEST_BUCKETS, registry=registry)
        self.upload_bytes = Counter("vaultdrop_upload_bytes", "Bytes sent to the vault (resent bytes included)",
                                    ["folder"], registry=registry)
        self.files = Counter("vaultdrop_files", "Jobs that ended, by outcome", ["folder", "outcome"],
                             registry=registry)
        self.retries = Counter("vaultdrop_retries", "Retries scheduled, by reason", ["reason"], registry=registry)
        self.vault_up = Gauge("vaultdrop_vault_up", "0 while the vault cannot be reached (an outage), else 1",
                              registry=registry)
        self.last_success = Gauge("vaultdrop_last_success_timestamp_seconds",
                                  "When the vault last confirmed a file (Unix time)", registry=registry)
        self.waiting = Gauge("vaultdrop_files_waiting", "Files not complete yet, by why: settling, open (for "
                             "writing), incomplete (container), open_too_long (open past incomplete_timeout)",
                             ["reason"], registry=registry)
        self.notifications = {outcome: Counter(f"vaultdrop_notifications_{outcome}", what, registry=registry)
                              for outcome, what in (("sent", "Webhook events delivered (any 2xx)"),
                                                    ("failed", "Webhook delivery attempts that failed (refused, "
                                                     "timeout, not 2xx)"),
                                                    ("given_up", "Webhook events given up after max_attempts"))}
        self.missing = Gauge("vaultdrop_folder_missing", "1 while a watched folder does not exist (a mount not up "
                             "yet): it is watched once it does", ["folder"], registry=registry)
        Info("vaultdrop_build", "The running vaultdrop", registry=registry).info({"version": __version__})
        self.vault_up.set(1)  # no evidence of an outage yet
        for reason in RETRY_REASONS:
            self.retries.labels(reason)
        self.files_waiting(dict.fromkeys(WAIT_REASONS, 0))

    def files_waiting(self, counts: Mapping[str, int]) -> None:
        for reason, count in counts.items():
            self.waiting.labels(reason).set(count)

    def notification(self, outcome: str) -> None:
        """A webhook delivery attempt's outcome: sent, failed or given_up (notify.py)."""
        self.notifications[outcome].inc()

    def folders_missing(self, folders: Collection[str], missing: Collection[str]) -> None:
        """One series per configured folder: a folder a reload removed leaves no stale 1."""
        for sample in self.missing.collect()[0].samples:
            if sample.labels["folder"] not in folders:
                self.missing.remove(sample.labels["folder"])
        for folder in folders:
            self.missing.labels(folder).set(1 if folder in missing else 0)

    def watching(self, folder: str) -> None:
        """Create a folder's series at zero, so its first failure is an increase, not a new series."""
        self.missing.labels(folder)
        self.ingest.labels(folder)
        self.upload_bytes.labels(folder)
        for outcome in OUTCOMES.values():
            self.files.labels(folder, outcome)

    def changed(self, job: Job, previous: JobState | None, detail: str) -> None:
        if previous is JobState.CONFIRMING and job.state in (JobState.S3_QUEUEING, JobState.FINISHING):
            now = self._clock()
            self.ingest.labels(job.folder).observe(max(0.0, now - job.created_at))
            self.last_success.set(now)
        outcome = OUTCOMES.get(job.state)
        if outcome is not None:
            self.files.labels(job.folder, outcome).inc()

    def retry_scheduled(self, job: Job, reason: str) -> None:
        self.retries.labels(reason).inc()

    def uploaded(self, job: Job, nbytes: int) -> None:
        self.upload_bytes.labels(job.folder).inc(nbytes)

    def vault_reachable(self, up: bool) -> None:
        self.vault_up.set(1 if up else 0)


class JournalCollector(Collector):
    """Job and outbox gauges computed from the journal at each scrape (scrapes may run
    concurrently). `watched`: the folders watched now, when only they get a label of their own."""

    def __init__(self, journal: JournalStore, clock: Callable[[], float] = time.time,
                 watched: Callable[[], Collection[str]] | None = None) -> None:
        self._journal = journal
        self._clock = clock
        self._watched = watched
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        try:
            with self._lock:
                groups = self._journal.summary()
                outbox, oldest_event = self._journal.outbox_pending()
        except (ConfigError, JournalUnavailable) as exc:  # an unreadable or unreachable journal: gauges left out
            log(logging.WARNING, f"metrics: cannot read the journal: {exc}")
            return []
        now = self._clock()
        jobs = GaugeMetricFamily("vaultdrop_jobs", "Jobs in the journal per folder and state",
                                 labels=["folder", "state"])
        oldest = GaugeMetricFamily("vaultdrop_oldest_pending_seconds",
                                   "Age of the oldest job not yet done, failed or skipped (0: none)",
                                   labels=["folder"])
        s3 = GaugeMetricFamily("vaultdrop_s3_requests", "S3 copy requests being followed, by their status",
                               labels=["status"])
        counts: dict[tuple[str, JobState], int] = {}
        pending: dict[str, float] = {}
        requests: dict[str, int] = {}
        watched = None if self._watched is None else set(self._watched())
        for group in groups:
            folder = group.folder if watched is None or group.folder in watched else OTHER_FOLDERS
            counts[folder, group.state] = counts.get((folder, group.state), 0) + group.count
            pending.setdefault(folder, now)
            if group.state in ACTIVE:
                pending[folder] = min(pending[folder], group.oldest_created_at)
            if group.state is JobState.S3_WAITING:
                status = group.s3_status or "unknown"
                requests[status] = requests.get(status, 0) + group.count
        for folder in sorted(pending):
            for state in JobState:
                jobs.add_metric([folder, state.value], counts.get((folder, state), 0))
            oldest.add_metric([folder], max(0.0, now - pending[folder]))
        for status, count in sorted(requests.items()):
            s3.add_metric([status], count)
        events = GaugeMetricFamily("vaultdrop_notifications_pending",
                                   "Webhook events not yet delivered nor given up", value=outbox)
        oldest_event_age = GaugeMetricFamily(
            "vaultdrop_notifications_oldest_pending_seconds", "Age of the oldest webhook event not yet delivered nor "
            "given up (0: none)", value=0.0 if oldest_event is None else max(0.0, now - oldest_event))
        return [jobs, oldest, s3, events, oldest_event_age]


def last_confirmed(journal: JournalStore) -> float:
    """When the vault last confirmed a file, by the newest done job's history (0: never, or
    the journal cannot say now): the gauge would otherwise read 0 after every restart."""
    try:
        newest = journal.jobs(JobState.DONE, limit=1)
        history = journal.history(newest[0].id) if newest else []
    except (ConfigError, JournalUnavailable) as exc:
        log(logging.WARNING, f"metrics: cannot read the last success from the journal: {exc}")
        return 0.0
    confirmed = [line["at"] for line in history if line["from_state"] == JobState.CONFIRMING.value
                 and line["to_state"] in (JobState.S3_QUEUEING.value, JobState.FINISHING.value)]
    return max(confirmed, default=newest[0].updated_at if newest else 0.0)


class MetricsServer:
    """/metrics on `listen` (host:port) from prometheus-client's own HTTP thread."""

    def __init__(self, listen: str, reader: JournalStore, recorder_clock: Callable[[], float] = time.time,
                 watched: Callable[[], Collection[str]] | None = None) -> None:
        """`reader`: a journal of its own for the scrape thread (closed with the server);
        `watched`: the folders watched now (the daemon's, across reloads)."""
        disable_created_metrics()  # `_created` series would double the output and no rule uses them
        self.registry = CollectorRegistry()
        self.recorder = MetricsRecorder(self.registry, clock=recorder_clock)
        self.recorder.last_success.set(last_confirmed(reader))
        ProcessCollector(registry=self.registry)
        self._reader = reader
        self.registry.register(JournalCollector(self._reader, watched=watched))
        host, port = listen_parts(listen)
        try:
            self._server: WSGIServer
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            self._reader.close()
            raise ConfigError(f"metrics.listen {listen}: cannot listen: {exc.strerror or exc}") from None

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._reader.close()
