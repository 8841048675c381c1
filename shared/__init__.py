"""What the gateway and the workers must agree on: settings, Redis keys, jobs, events."""
