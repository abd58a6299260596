"""Notifications: the event catalogue and its templates, rendered in the recipient's language.

This package is pure (no HTTP, no database): `catalogue` lists the events, the category each
belongs to and the data each needs; `rendering.render` turns an event and its data into the text
a recipient reads, in their locale and time zone.
"""
