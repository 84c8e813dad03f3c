"""The parts that both the API (`graph/`) and the workers (`workers/`) need:
settings, the Redis connection (embedded or not) and the queue engine."""
