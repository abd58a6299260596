"""Imports every table so `Base.metadata` is complete (for the migrations check and tooling)."""

from app.auth.models import ApiKey
from app.codes.models import Verification
from app.core.database import Base
from app.idempotency.models import IdempotencyKey
from app.messages.models import Message, MessageEvent
from app.optouts.models import ConsentEvent, Suppression
from app.preferences.models import SmsPreferences
from app.topics.models import TopicSubscription
from app.users.models import User

__all__ = [
    "ApiKey",
    "Base",
    "ConsentEvent",
    "IdempotencyKey",
    "Message",
    "MessageEvent",
    "SmsPreferences",
    "Suppression",
    "TopicSubscription",
    "User",
    "Verification",
]
