"""Imports every table so `Base.metadata` is complete (for the migrations check and tooling)."""

from app.analytics.models import MessageDailyStats
from app.auth.models import ApiKey
from app.bookings.models import Booking
from app.campaigns.models import Campaign, CampaignCount, campaign_count_deltas
from app.codes.models import Verification
from app.core.database import Base
from app.idempotency.models import IdempotencyKey
from app.messages.models import Message, MessageEvent
from app.notifications.models import Notification
from app.optouts.models import ConsentEvent, Suppression
from app.preferences.models import SmsPreferences
from app.topics.models import TopicSubscription
from app.users.erasures import Erasure
from app.users.models import User

__all__ = [
    "ApiKey",
    "Base",
    "Booking",
    "Campaign",
    "CampaignCount",
    "ConsentEvent",
    "Erasure",
    "IdempotencyKey",
    "Message",
    "MessageDailyStats",
    "MessageEvent",
    "Notification",
    "SmsPreferences",
    "Suppression",
    "TopicSubscription",
    "User",
    "Verification",
    "campaign_count_deltas",
]
