"""`make bench`: throughput, latency, worker drain, freshness and cost growth of banditd."""
