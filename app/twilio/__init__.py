"""Twilio's REST API: the client the service sends with, and request signatures."""
