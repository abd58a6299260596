"""Which language and time zone a recipient reads a notification in."""

from __future__ import annotations

from app.notifications.quiet_hours import recipient_zones
from app.notifications.rendering import DEFAULT_LOCALE
from app.users.models import User


def recipient_locale_and_zone(
    user: User | None, e164: str | None, requested_locale: str | None = None
) -> tuple[str, str]:
    """A user's own locale and zone (the zone from the number when the profile has none); for
    a bare number, the caller's `requested_locale` and the number's zone."""
    locale = user.locale if user is not None else requested_locale
    zone = recipient_zones(user.time_zone if user is not None else None, e164)[0]
    return locale or DEFAULT_LOCALE, zone.key
