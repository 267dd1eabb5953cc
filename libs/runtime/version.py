"""fleetwatch's version, from the installed package's metadata.

Services must not import the `fleetwatch` CLI package for it (a service image ships only
libs/ and its own service), so the version comes from the distribution's metadata: present
for a pip-installed wheel or an editable install, absent in an image that copies the source.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "fleetwatch"
UNKNOWN = "0+unknown"


@cache
def fleetwatch_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return UNKNOWN
