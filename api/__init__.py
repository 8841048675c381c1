"""The gateway: validates requests, enqueues jobs, relays session events. No torch here."""
