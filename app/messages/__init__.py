"""Messages: how an SMS is accepted, stored, tracked and shown."""
