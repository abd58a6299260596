"""Idempotency-Key: a retried sending request is answered, not repeated."""
