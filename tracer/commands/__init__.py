"""The runs: a live trace (session, live) and a replay, with their options and filters."""
