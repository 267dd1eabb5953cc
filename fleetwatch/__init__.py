"""The `fleetwatch` command: operator CLI and the dev/maintenance tools."""

__version__ = "0.1.0"
