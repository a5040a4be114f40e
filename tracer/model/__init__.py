"""The model: events and the JSON Lines contract that describes them (no kernel, no screen)."""
