from __future__ import annotations

from app.core.errors import Conflict, NotFound


class CampaignNotFound(NotFound):
    code = "campaign_not_found"


class CampaignFinished(Conflict):
    """Pausing or resuming a cancelled or completed campaign, cancelling a completed one."""

    code, title = "campaign_finished", "Campaign finished"
