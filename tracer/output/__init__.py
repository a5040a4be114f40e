"""What people and programs read: text, JSON Lines, recordings, views."""
