"""The outbox: claiming queued messages and handing each to Twilio exactly once."""
