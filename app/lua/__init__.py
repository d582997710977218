"""Lua scripts run inside Redis (loaded by app.event_stream)."""
