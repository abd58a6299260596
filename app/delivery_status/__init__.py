"""Delivery status: Twilio's signed callbacks, the backstop poller and prices."""
