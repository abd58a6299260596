"""Retention: bodies erased, then rows deleted, their counts kept as daily aggregates."""
