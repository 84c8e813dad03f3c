"""The peers' apps: each the same no-op handler (bench.handlers.record), default settings
except where a scenario names the concurrency."""
