"""Notifications: events rendered in each recipient's language and sent to users and topics.

`catalogue` lists the events, the category each belongs to and the data each needs;
`rendering.render` turns an event and its data into the text a recipient reads, in their locale
and time zone; `quiet_hours` says when a message may arrive; `service.deliver` renders an event
for its recipients and stores one message each (the outbox sends them).
"""
