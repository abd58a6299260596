"""Codes sent versus codes verified, per country: SMS pumping shows as sends nobody verifies."""

from __future__ import annotations

from prometheus_client import Counter

CODES_SENT = Counter("sms_codes_sent_total", "One-time codes sent", ["country"])
CODES_VERIFIED = Counter("sms_codes_verified_total", "One-time codes verified", ["country"])
