"""Render a notification event's template in the recipient's locale and time zone.

Templates live in `templates/<locale>.toml`, one table per event:

    ["booking.confirmed"]
    text = "... {service_name} on {starts_at} ({seats}) ..."
    plurals.seats = { one = "{count} seat", other = "{count} seats" }

`{field}` is replaced by the event's data, formatted by the field's kind (dates in the
recipient's zone, money in the locale's style, labels through `[labels.<set>]`); a COUNT field
with a `plurals` entry is replaced by the CLDR plural form its value selects, in which `{count}`
is the number. `{{` and `}}` are literal braces. An operator's overrides directory holds files of
the same shape whose entries replace the built-in ones per event and locale (and may add locales).
`check_templates` (from `overrides`) checks every file at startup; at run time an override file
that no longer passes is logged and ignored (see `overrides`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time, get_datetime_format
from babel.numbers import format_currency, format_decimal

from app.core.errors import FieldError, Unprocessable
from app.messages.encoding import MAX_BODY_CHARACTERS
from app.messages.exceptions import BodyTooLong
from app.notifications.catalogue import EVENTS, DataField, EventSpec, FieldKind
from app.notifications.overrides import (
    COUNT_PLACEHOLDER,
    DEFAULT_LOCALE,
    LABELS_KEY,
    PLACEHOLDER,
    TEMPLATES_DIR,
    InvalidTemplates,
    Templates,
    builtin_locales,
    builtin_templates,
    check_templates,
    override_templates,
)

__all__ = [
    "DEFAULT_LOCALE",
    "TEMPLATES_DIR",
    "InvalidTemplateData",
    "InvalidTemplates",
    "InvalidTimeZone",
    "MissingTemplateData",
    "TemplateData",
    "TemplateNotFound",
    "UnknownEvent",
    "builtin_locales",
    "check_data",
    "check_templates",
    "render",
    "resolve_locale",
]

TemplateData = Mapping[str, Any]


class UnknownEvent(Unprocessable):
    code, title = "unknown_event", "Unknown notification event"


class MissingTemplateData(Unprocessable):
    code, title = "missing_template_data", "Missing template data"


class InvalidTemplateData(Unprocessable):
    code, title = "invalid_template_data", "Invalid template data"


class InvalidTimeZone(Unprocessable):
    code, title = "invalid_time_zone", "Invalid time zone"


class TemplateNotFound(Exception):
    """A template `check_templates` refuses (an event missing from the default locale, a
    placeholder that is no field): a defect in the built-in files, never an operator's override."""


def _candidates(requested: str | None) -> list[str]:
    """`fr-CA` → [`fr_CA`, `fr`]; unparseable → []."""
    if not requested:
        return []
    try:
        parsed = Locale.parse(requested.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return []
    names = [str(parsed)]
    if parsed.territory:
        names.append(f"{parsed.language}_{parsed.territory}")
    names.append(parsed.language)
    return list(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class _LocaleTexts:
    """One locale's built-in and override tables, read once for one render."""

    builtin: Templates
    override: Templates

    def entry(self, event: str) -> dict[str, Any] | None:
        override = self.override.get(event)
        builtin = self.builtin.get(event)
        if override is None:
            return builtin
        # An override replaces the text; plural forms it does not give come from the built-in.
        merged: dict[str, Any] = dict(builtin or {})
        merged.update(override)
        plurals = dict((builtin or {}).get("plurals", {}))
        plurals.update(override.get("plurals", {}))
        merged["plurals"] = plurals
        return merged

    def labels(self, label_set: str) -> dict[str, str]:
        labels = dict(self.builtin.get(LABELS_KEY, {}).get(label_set, {}))
        labels.update(self.override.get(LABELS_KEY, {}).get(label_set, {}))
        return labels


def _texts(locale: str, overrides_dir: Path | None) -> _LocaleTexts:
    return _LocaleTexts(builtin_templates(locale), override_templates(overrides_dir, locale))


def _resolve(
    event: str, requested: str | None, overrides_dir: Path | None
) -> tuple[str, str, _LocaleTexts, dict[str, Any]]:
    """(template locale, formatting locale, that locale's texts, the event's entry)."""
    candidates = _candidates(requested)
    for name in candidates:
        texts = _texts(name, overrides_dir)
        entry = texts.entry(event)
        if entry is not None:
            return name, candidates[0], texts, entry
    texts = _texts(DEFAULT_LOCALE, overrides_dir)
    entry = texts.entry(event)
    if entry is None:  # check_templates refuses a default locale without every event
        raise TemplateNotFound(f"No template for {event!r} in {DEFAULT_LOCALE!r}.")
    return DEFAULT_LOCALE, DEFAULT_LOCALE, texts, entry


def resolve_locale(
    event: str, requested: str | None, overrides_dir: Path | None = None
) -> tuple[str, str]:
    """(the locale whose template is used, the locale numbers and dates are formatted in).

    Formatting keeps the recipient's regional variant (`fr_CA`) when the text is in its language.
    """
    template_locale, formatting_locale, _, _ = _resolve(event, requested, overrides_dir)
    return template_locale, formatting_locale


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _invalid(field: DataField, message: str) -> InvalidTemplateData:
    return InvalidTemplateData(
        f"body.data.{field.name}: {message}",
        errors=[FieldError(field=f"body.data.{field.name}", message=message, type="invalid")],
    )


def _as_datetime(field: DataField, value: object) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise _invalid(field, "not an ISO 8601 date and time") from None
    else:
        raise _invalid(field, "not an ISO 8601 date and time")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise _invalid(field, "needs a time zone offset (e.g. `Z` or `+02:00`)")
    return moment


def _as_decimal(field: DataField, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise _invalid(field, "not a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _invalid(field, "not a number") from None
    if not amount.is_finite():
        raise _invalid(field, "not a number")
    return amount


def _as_count(field: DataField, value: object) -> int:
    if isinstance(value, bool):
        raise _invalid(field, "not a whole number")
    if isinstance(value, int):
        count = value
    elif isinstance(value, str) and value.strip().isdigit():
        count = int(value.strip())
    else:
        raise _invalid(field, "not a whole number")
    if count < 0:
        raise _invalid(field, "must not be negative")
    return count


def _substitute(text: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        matched = match.group(0)
        if matched == "{{":
            return "{"
        if matched == "}}":
            return "}"
        name = match.group(1)
        if name not in values:
            raise TemplateNotFound(f"template placeholder {{{name}}} has no value")
        return values[name]

    return PLACEHOLDER.sub(replace, text)


def _plural(
    forms: Mapping[str, str], count: int, formatting: Locale, values: Mapping[str, str]
) -> str:
    category = formatting.plural_form(count)
    form = forms.get(category, forms.get("other"))
    if form is None:
        raise TemplateNotFound(f"no `{category}` or `other` plural form")
    number = format_decimal(count, locale=formatting)
    return _substitute(form, {**values, COUNT_PLACEHOLDER: number})


def _zone(time_zone: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidTimeZone(f"Unknown time zone {time_zone!r}.") from None


def render(
    event: str,
    data: TemplateData,
    locale: str | None,
    time_zone: str | None,
    *,
    overrides_dir: Path | None = None,
) -> str:
    """The text `event` sends with `data`, as a recipient in `locale` and `time_zone` reads it.

    Raises MissingTemplateData (422, every missing field listed), InvalidTemplateData,
    UnknownEvent, InvalidTimeZone, or BodyTooLong when the text exceeds 1600 characters.
    """
    spec = EVENTS.get(event)
    if spec is None:
        raise UnknownEvent(f"No notification event {event!r}.")
    missing = [item.name for item in spec.fields if _is_missing(data.get(item.name))]
    if missing:
        raise MissingTemplateData(
            "Missing data for the template: " + ", ".join(missing) + ".",
            errors=[
                FieldError(field=f"body.data.{name}", message="Field required", type="missing")
                for name in missing
            ],
        )
    zone = _zone(time_zone)
    _, formatting_name, texts, entry = _resolve(event, locale, overrides_dir)
    formatting = Locale.parse(formatting_name)
    values = _format_values(spec, data, entry, texts, formatting, zone)
    text = _substitute(str(entry["text"]), values).translate(_PLAIN_SPACES).strip()
    if len(text) > MAX_BODY_CHARACTERS:
        raise BodyTooLong(
            f"The rendered message has {len(text)} characters; at most "
            f"{MAX_BODY_CHARACTERS} can be sent."
        )
    return text


# CLDR puts no-break spaces in times (U+202F before PM) and amounts (U+00A0 before €). Outside
# GSM-7, they would make the whole message UCS-2: twice the segments for nothing visible.
_PLAIN_SPACES = str.maketrans({"\u202f": " ", "\u00a0": " ", "\u2009": " "})


def _date_and_time(moment: datetime, zone: ZoneInfo, formatting: Locale) -> str:
    """The locale's medium date with its short time ("Mar 10, 2026, 3:30 PM"): seconds say
    nothing in an SMS."""
    date = format_date(moment, "medium", locale=formatting)
    time = format_time(moment, "short", tzinfo=zone, locale=formatting)
    pattern = str(get_datetime_format("medium", locale=formatting))
    return pattern.replace("{1}", date).replace("{0}", time)


def check_data(event: str, data: TemplateData, *, overrides_dir: Path | None = None) -> None:
    """Raises what `render` raises for the data itself (missing fields, values of the wrong
    kind), for a request with nobody to render it for: its data is checked all the same. Not
    the length, which depends on the recipient's language."""
    with suppress(BodyTooLong):
        render(event, data, DEFAULT_LOCALE, "UTC", overrides_dir=overrides_dir)


def _format_values(
    spec: EventSpec,
    data: TemplateData,
    entry: Mapping[str, Any],
    texts: _LocaleTexts,
    formatting: Locale,
    zone: ZoneInfo,
) -> dict[str, str]:
    currency = str(data.get("currency", "")).strip().upper()
    values: dict[str, str] = {}
    counts: dict[str, int] = {}
    for item in spec.fields:
        value = data[item.name]
        if item.kind is FieldKind.DATETIME:
            moment = _as_datetime(item, value).astimezone(zone)
            values[item.name] = _date_and_time(moment, zone, formatting)
        elif item.kind is FieldKind.MONEY:
            amount = _as_decimal(item, value)
            if not re.fullmatch(r"[A-Z]{3}", currency):
                raise _invalid(DataField("currency"), "not an ISO 4217 currency code")
            try:
                values[item.name] = format_currency(amount, currency, locale=formatting)
            except Exception:  # babel raises several kinds for an unknown currency code
                raise _invalid(DataField("currency"), "not an ISO 4217 currency code") from None
        elif item.kind is FieldKind.COUNT:
            counts[item.name] = _as_count(item, value)
            values[item.name] = format_decimal(counts[item.name], locale=formatting)
        elif item.kind is FieldKind.LABEL:
            raw = str(value).strip()
            labels = texts.labels(item.labels or item.name)
            values[item.name] = labels.get(raw.lower(), raw)
        else:
            values[item.name] = str(value).strip()
    plurals: Mapping[str, Mapping[str, str]] = entry.get("plurals", {})
    for name, count in counts.items():
        if name in plurals:
            values[name] = _plural(plurals[name], count, formatting, values)
    return values
