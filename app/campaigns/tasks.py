"""arq jobs of campaigns: thin, they call the campaign sender (chunks.py)."""

from __future__ import annotations

import uuid
from typing import Any

from arq import Retry

from app.campaigns.chunks import CampaignSender


def sender_of(ctx: dict[str, Any]) -> CampaignSender:
    sender: CampaignSender = ctx["campaigns"]
    return sender


async def send_campaign_chunk(
    ctx: dict[str, Any], campaign_id: str, chunk: int
) -> dict[str, object]:
    """One chunk's messages through the outbox; job id `campaign:<id>:<chunk>`."""
    report = await sender_of(ctx).send_chunk(uuid.UUID(campaign_id), chunk)
    if report.again_in is not None:  # out of time, or the worker is busy: the same job again
        raise Retry(defer=report.again_in)
    return report.as_dict()


async def sweep_campaigns(ctx: dict[str, Any]) -> dict[str, int]:
    return await sender_of(ctx).sweep()
