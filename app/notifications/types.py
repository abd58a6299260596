"""Request types shared by every endpoint that renders an event (notify, send, bookings)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StrictInt, StringConstraints

from app.core.types import Text
from app.notifications.catalogue import EVENTS


def _known_event(name: str) -> str:
    if name not in EVENTS:
        raise ValueError("not an event of the catalogue (see the enum)")
    return name


# Every event of the catalogue, as an enum in the OpenAPI description.
EventName = Annotated[
    str, AfterValidator(_known_event), Field(json_schema_extra={"enum": list(EVENTS)})
]
# Events that are sent through the code endpoints only: their codes are made as they leave.
CODE_EVENTS = frozenset(name for name, spec in EVENTS.items() if spec.category == "one_time_code")

TemplateValue = (
    Annotated[Text, StringConstraints(max_length=1600)]
    | StrictInt
    | Annotated[float, Field(allow_inf_nan=False, strict=True)]
)
TemplateKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
TemplateData = Annotated[
    dict[TemplateKey, TemplateValue],
    Field(
        max_length=50,
        description="The values the event's template needs, by name (text or numbers; dates "
        "as ISO 8601 with a zone). A missing one is a 422 naming it.",
    ),
]
