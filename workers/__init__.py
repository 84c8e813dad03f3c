"""Worker processes: take jobs from Redis and run the handler on them."""
