"""The list endpoint's query: filters, page size and page tokens, and the page's URIs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode

from app.twilio_sandbox.errors import bad_request
from app.twilio_sandbox.store import SandboxMessage

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
FILTERS = ("To", "From", "DateSent", "DateSent<", "DateSent>")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# "PA<seq>": the page after the message with that sequence number; "PB<seq>": the one before.
_TOKEN = re.compile(r"^P([AB])(\d+)$")


@dataclass(frozen=True, slots=True)
class ListQuery:
    filters: tuple[tuple[str, str], ...]
    to: str | None
    from_: str | None
    sent_from: datetime | None
    """Inclusive lower bound of a message's filter date."""
    sent_until: datetime | None
    """Exclusive upper bound."""
    page_size: int
    page: int
    page_token: str | None

    @classmethod
    def parse(cls, params: Sequence[tuple[str, str]]) -> ListQuery:
        values = dict(params)
        filters = tuple((name, value) for name, value in params if name in FILTERS)
        sent_from: datetime | None = None
        sent_until: datetime | None = None
        if "DateSent" in values:
            day = _parse_day(values["DateSent"], "DateSent")
            sent_from, sent_until = _midnight(day), _midnight(day + timedelta(days=1))
        if "DateSent>" in values:  # "DateSent>=…" in a URL: on or after
            sent_from = _later(sent_from, _lower_bound(values["DateSent>"]))
        if "DateSent<" in values:  # "DateSent<=…": on or before
            sent_until = _earlier(sent_until, _upper_bound(values["DateSent<"]))
        token = values.get("PageToken") or None
        if token is not None and not _TOKEN.match(token):
            raise bad_request(20001, "Invalid PageToken")
        return cls(
            filters=filters,
            to=values.get("To") or None,
            from_=values.get("From") or None,
            sent_from=sent_from,
            sent_until=sent_until,
            page_size=_integer(values, "PageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
            page=_integer(values, "Page", 0, 0, 10**9),
            page_token=token,
        )

    def matches(self, message: SandboxMessage) -> bool:
        when = message.filter_date
        return (
            (self.to is None or message.to == self.to)
            and (self.from_ is None or message.from_ == self.from_)
            and (self.sent_from is None or when >= self.sent_from)
            and (self.sent_until is None or when < self.sent_until)
        )


@dataclass(frozen=True, slots=True)
class Page:
    messages: list[SandboxMessage]
    page: int
    page_size: int
    start: int
    end: int
    uri: str
    first_page_uri: str
    next_page_uri: str | None
    previous_page_uri: str | None


def paginate(newest_first: list[SandboxMessage], query: ListQuery, base_uri: str) -> Page:
    """One page of the messages that match, newest first. Page tokens point at a message, so
    paging stays stable while new messages arrive."""
    matching = [message for message in newest_first if query.matches(message)]
    size = query.page_size
    token = _TOKEN.match(query.page_token) if query.page_token else None
    if token is None:
        offset = query.page * size
        items = matching[offset : offset + size]
        older = matching[offset + size :]
        newer_exist = offset > 0
    elif token.group(1) == "A":
        after = int(token.group(2))
        remaining = [message for message in matching if message.seq < after]
        items, older = remaining[:size], remaining[size:]
        newer_exist = len(remaining) < len(matching)
    else:
        before = int(token.group(2))
        newer = [message for message in matching if message.seq > before]
        items = newer[-size:]
        older = [message for message in matching if message.seq <= before]
        newer_exist = len(newer) > size

    def uri(page: int, page_token: str | None) -> str:
        params = [*query.filters, ("PageSize", str(size)), ("Page", str(page))]
        if page_token is not None:
            params.append(("PageToken", page_token))
        return f"{base_uri}?{urlencode(params)}"

    start = query.page * size
    return Page(
        messages=items,
        page=query.page,
        page_size=size,
        start=start,
        end=start + max(len(items) - 1, 0),
        uri=uri(query.page, query.page_token),
        first_page_uri=uri(0, None),
        next_page_uri=uri(query.page + 1, f"PA{items[-1].seq}") if items and older else None,
        previous_page_uri=(
            uri(max(query.page - 1, 0), f"PB{items[0].seq}") if items and newer_exist else None
        ),
    )


def _integer(values: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = values.get(name)
    if raw is None or raw == "":
        return default
    try:
        number = int(raw)
    except ValueError:
        raise bad_request(20001, f"Invalid {name}") from None
    if not low <= number <= high:
        raise bad_request(20001, f"{name} must be between {low} and {high}")
    return number


def _parse_day(raw: str, name: str) -> date:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise bad_request(20001, f"Invalid {name}: expected YYYY-MM-DD") from None


def _parse_moment(raw: str, name: str) -> datetime:
    """ISO 8601 (`2024-05-01T10:00:00Z`, `2024-05-01 10:00:00.000`) or RFC 2822."""
    text = raw.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise bad_request(20001, f"Invalid {name}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _lower_bound(raw: str) -> datetime:
    if _DATE.match(raw.strip()):
        return _midnight(_parse_day(raw, "DateSent>"))
    return _parse_moment(raw, "DateSent>")


def _upper_bound(raw: str) -> datetime:
    if _DATE.match(raw.strip()):  # a whole day counts: up to the next midnight
        return _midnight(_parse_day(raw, "DateSent<") + timedelta(days=1))
    return _parse_moment(raw, "DateSent<") + timedelta(microseconds=1)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _later(current: datetime | None, bound: datetime) -> datetime:
    return bound if current is None else max(current, bound)


def _earlier(current: datetime | None, bound: datetime) -> datetime:
    return bound if current is None else min(current, bound)
