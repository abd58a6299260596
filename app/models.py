"""Imports every table so `Base.metadata` is complete (for the migrations check and tooling)."""

from app.auth.models import ApiKey
from app.core.database import Base
from app.preferences.models import SmsPreferences
from app.topics.models import TopicSubscription
from app.users.models import User

__all__ = ["ApiKey", "Base", "SmsPreferences", "TopicSubscription", "User"]
