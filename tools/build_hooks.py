"""setuptools hook (pyproject.toml, [tool.setuptools.cmdclass]): a wheel carries what the
installed packages read at run time but that lives outside them in the source tree.

- ui/dist (the Vite build, `make ui`) -> services/gateway/ui: the gateway serves it from there
  when no source tree is around (services/gateway/config.py picks whichever exists).
- requirements/agent.txt -> fleetwatch/agent-requirements.txt: `fleetwatch agent install` installs
  the agents from this lock when fleetwatch itself came from a wheel.

An editable install copies nothing: the packages are read from the source tree, next to ui/dist
and requirements/. A missing ui/dist is a warning, not an error: an agent host builds fleetwatch
from a checkout without node, and agents serve no UI; `make dist` builds the UI first.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parents[1]
# (source path relative to the project root, destination relative to the built packages)
COPIES = (
    ("ui/dist", "services/gateway/ui"),
    ("requirements/agent.txt", "fleetwatch/agent-requirements.txt"),
)


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for src_rel, dst_rel in COPIES:
            src, dst = ROOT / src_rel, Path(self.build_lib) / dst_rel
            # build/lib outlives a build: an old UI's hashed assets must not ride along.
            if dst.is_dir():
                shutil.rmtree(dst)
            elif dst.exists():
                dst.unlink()
            if src.is_dir() and (src / "index.html").is_file():
                shutil.copytree(src, dst)
            elif src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
            else:
                self.warn(f"{src_rel} not found: the wheel is built without it (`make ui` builds the UI)")
