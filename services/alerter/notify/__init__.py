"""Notifications: templates, the three transports, routing/grouping/retries."""
