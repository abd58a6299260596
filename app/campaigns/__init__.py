"""Bulk campaigns: one request to up to 100,000 recipients, sent in chunks; pause, resume,
cancel."""
