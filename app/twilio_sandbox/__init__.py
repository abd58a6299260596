"""A Twilio-compatible HTTP app that simulates a carrier, for development, tests and benchmarks.

It answers the Messages API of twilio/twilio_api_v2010.json (create, fetch, list, update,
delete), mirrors Twilio's magic test numbers, sends signed status callbacks after a delay,
keeps an inbox per number and injects faults on demand. State is in memory: one process."""

from app.twilio_sandbox.app import create_sandbox_app
from app.twilio_sandbox.config import SandboxConfig

__all__ = ["SandboxConfig", "create_sandbox_app"]
