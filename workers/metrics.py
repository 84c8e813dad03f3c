"""A worker's Prometheus metrics, served on METRICS_PORT when it is set."""

from prometheus_client import Counter, Gauge, Histogram

FINISHED = Counter(
    "queue_worker_attempts_total",
    "Attempts recorded by this worker, by verdict (completed, retry, failed, stale)",
    ["verdict"],
)
STARTED = Counter("queue_worker_jobs_started_total", "Attempts this worker started")
RECLAIMED = Counter("queue_worker_reclaimed_total", "Expired leases this worker reclaimed")
HANDLER_SECONDS = Histogram("queue_handler_seconds", "Time spent in the handler per attempt")
HUNG_THREADS = Gauge(
    "queue_worker_hung_threads",
    "Handler threads still running past their job's timeout (each takes a slot)",
)
