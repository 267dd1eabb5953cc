"""The `fleetwatch` command: operator CLI and the dev/maintenance tools."""

from libs.runtime.version import fleetwatch_version

__version__ = fleetwatch_version()
