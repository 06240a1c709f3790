"""Deciding what is due, claiming work, running it: one pass, or a worker forever."""
