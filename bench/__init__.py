"""Benchmarks of the queue engine side by side with established queues (issue 6).

    python -m bench                # every scenario, about 10 minutes on 2 cores
    python -m bench --only 1,2     # some scenarios
    python -m bench --quick        # one short repetition of each, to try the harness

See bench/README.md for what each scenario measures and how.
"""
