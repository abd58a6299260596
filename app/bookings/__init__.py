"""Bookings' reminders: scheduled, moved with the booking, cancelled with it."""
