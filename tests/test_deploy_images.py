"""The images of infra/docker/*.Dockerfile, checked without a container engine (none here).

For each Dockerfile the check does what a build would, here: the final stage's COPY lines bring
exactly their files from the build context (the repository root, less .dockerignore) into an
empty folder that stands for the image's root. A stage named by `COPY --from` is built first,
for real: its COPY lines, then its RUN lines (the Node stage's `npm ci` and `npm run build`; the
Python stage's venv and its install from the lock, done by uv with the same file and flags pip
gets there). Then the image's CMD runs in that folder: its WORKDIR, only its ENV (plus HOME), no
NATS URL. The service must import everything it needs from the image alone and stop at its
settings error (exit 2, naming FLEETWATCH_NATS_URL). The negative tests drop one COPY line at a
time and expect the check to fail.

Not modelled: the base images' own files (this machine's Python 3.11 and Node 20 stand in for
python:3.11-slim and node:20), file ownership and USER.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uv

from tests.conftest import ROOT

DOCKER = ROOT / "infra" / "docker"
IMAGES = sorted(p.name.removesuffix(".Dockerfile") for p in DOCKER.glob("*.Dockerfile"))
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the base images' PATH


class ImageError(Exception):
    """The image as built would not work; the message says where."""


@dataclass
class Stage:
    base: str
    name: str
    ops: list[tuple[str, str]] = field(default_factory=list)  # (instruction, its arguments)


def parse(text: str) -> list[Stage]:
    stages: list[Stage] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # Docker drops comments inside continuations too
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        line, buf = buf + line, ""
        op, _, args = line.partition(" ")
        if op.upper() == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(words[0], name))
        else:
            stages[-1].ops.append((op.upper(), args.strip()))
    return stages


def _glob_re(pat: str) -> str:
    out, i = "", 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pat.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pat[i], re.escape(pat[i]))
            i += 1
    return out


def dockerignore(path: Path) -> Callable[[str], bool]:
    """Docker's rules: patterns from the context root, a match on a folder covers what is in it,
    `!` re-includes, the last matching line wins."""
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pat = posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")
            rules.append((line.startswith("!"), re.compile(_glob_re(pat))))

    def ignored(rel: str) -> bool:
        parts, out = rel.split("/"), False
        for keep, rx in rules:
            if any(rx.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
                out = not keep
        return out

    return ignored


def _copy(src: Path, dst: Path, rel: str | None, ignored: Callable[[str], bool], link: bool) -> None:
    """`src` (a file or a folder's contents) to `dst`. `rel`: its path in the build context, where
    .dockerignore applies; None for another stage's files (hard links: built once, only read)."""
    if src.is_dir() and not src.is_symlink():
        dst.mkdir(parents=True, exist_ok=True)
        for child in sorted(src.iterdir()):
            sub = None if rel is None else f"{rel}/{child.name}" if rel else child.name
            if sub is None or not ignored(sub):
                _copy(child, dst / child.name, sub, ignored, link)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif link:
        try:
            os.link(src, dst)
        except OSError:  # another file system
            shutil.copy2(src, dst)
    else:
        shutil.copy2(src, dst)


def _sh(argv: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def _in(root: Path, container_path: str) -> Path:
    return root / container_path.lstrip("/")


@dataclass
class Image:
    root: Path
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=lambda: {"PATH": BASE_PATH})
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)

    def run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        """`argv` as the container would run it: paths inside the image, its ENV only."""
        env = {k: self._mapped(v) for k, v in self.env.items()}
        env["HOME"] = str(self.root.parent / "home")
        exe = shutil.which(argv[0], path=env["PATH"]) if "/" not in argv[0] else str(_in(self.root, argv[0]))
        if exe is None or not Path(exe).is_relative_to(self.root):
            raise ImageError(f"{argv[0]!r} is not in the image (PATH={self.env['PATH']})")
        args = [str(_in(self.root, a)) if a.startswith("/") else a for a in argv[1:]]
        cwd = _in(self.root, self.workdir)
        return _sh([exe, *args], cwd=cwd, env=env, timeout=timeout)

    def _mapped(self, value: str) -> str:
        """A list of absolute paths (PATH): those the image has point into it, the rest (the base
        image's folders) stay as they are."""
        parts = value.split(":")
        if not all(p.startswith("/") for p in parts):
            return value
        return ":".join(str(_in(self.root, p)) if _in(self.root, p).exists() else p for p in parts)


class Builder:
    """Builds stages into folders. Stages a `COPY --from` names are built once per session, keyed
    by their text (the negative tests change only final stages)."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.ignored = dockerignore(ROOT / ".dockerignore")
        self.built: dict[tuple, Path] = {}

    def image(self, text: str, root: Path) -> Image:
        stages = parse(text)
        return self._stage(stages, stages[-1], root)

    def _stage(self, stages: list[Stage], stage: Stage, root: Path) -> Image:
        if stage.base.startswith("python:"):
            want = stage.base.split(":")[1].split("-")[0]
            have = ".".join(map(str, sys.version_info[:2]))
            assert have == want, f"{stage.base}: the check needs Python {want} here, this is {have}"
        img = Image(root)
        root.mkdir(parents=True, exist_ok=True)
        for op, args in stage.ops:
            if op == "WORKDIR":
                img.workdir = posixpath.join(img.workdir, args)
                _in(root, img.workdir).mkdir(parents=True, exist_ok=True)
            elif op == "ENV":
                img.env.update(self._env(args, img.env))
            elif op == "COPY":
                self._copy_op(stages, img, args)
            elif op == "RUN":
                self._run_op(stage, img, args)
            elif op == "CMD":
                img.cmd = json.loads(args)
            elif op == "HEALTHCHECK":
                img.healthcheck = json.loads(args.split(" CMD ", 1)[1])
            elif op not in ("USER", "EXPOSE", "STOPSIGNAL", "LABEL"):
                raise ImageError(f"{op} {args}: the check does not know this instruction")
        return img

    @staticmethod
    def _env(args: str, env: dict[str, str]) -> dict[str, str]:
        words = shlex.split(args)
        pairs = [(words[0], " ".join(words[1:]))] if "=" not in words[0] else [w.split("=", 1) for w in words]
        # $VAR is the value before this line (PATH: the base image's), as Docker expands it.
        return {k: re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), v) for k, v in pairs}

    def _built(self, stages: list[Stage], name: str) -> Path:
        stage = next((s for s in stages if s.name == name), None)
        if stage is None:
            raise ImageError(f"COPY --from={name}: no such stage")
        key = (stage.base, tuple(stage.ops))
        if key not in self.built:
            root = self.cache / f"stage-{len(self.built)}-{name}"
            self._stage(stages, stage, root)
            self.built[key] = root
        return self.built[key]

    def _copy_op(self, stages: list[Stage], img: Image, args: str) -> None:
        words = json.loads(args) if args.startswith("[") else shlex.split(args)
        src_root: Path | None = None
        for flag in (w for w in words if w.startswith("--")):
            key, _, value = flag.partition("=")
            if key == "--from":
                src_root = self._built(stages, value)
            elif key not in ("--chown", "--chmod", "--link"):
                raise ImageError(f"COPY {flag}: the check does not know this flag")
        *srcs, dest = (w for w in words if not w.startswith("--"))
        dest_path = posixpath.join(img.workdir, dest)
        into_dir = dest.endswith("/") or len(srcs) > 1
        for src in srcs:
            if src_root is None:  # the build context
                rel = posixpath.normpath(src).lstrip("/")
                path, found = ROOT / rel, (ROOT / rel).exists() and not self.ignored(rel)
            else:
                rel, path = None, _in(src_root, src)
                found = path.exists()
            if not found:
                raise ImageError(f"COPY {args}: {src} is not in the build context or stage")
            target = _in(img.root, dest_path)
            if path.is_file() and (into_dir or target.is_dir()):
                target = target / path.name
            _copy(path, target, rel, self.ignored, link=src_root is not None)

    def _run_op(self, stage: Stage, img: Image, cmd: str) -> None:
        if stage.base.startswith("node:"):
            want = stage.base.split(":")[1].split("-")[0]
            node = _sh(["node", "--version"], check=True).stdout
            assert node.lstrip("v").split(".")[0] == want, f"{stage.base}: the check needs Node {want}, this is {node}"
            # This machine's environment (npm's cache) plus the stage's; node and npm from here.
            env = {**os.environ, **{k: v for k, v in img.env.items() if k != "PATH"}}
            r = _sh(["bash", "-ec", cmd], cwd=_in(img.root, img.workdir), env=env, timeout=280)
            if r.returncode:
                raise ImageError(f"RUN {cmd}: exit {r.returncode}\n{(r.stdout + r.stderr)[-3000:]}")
            return
        for part in re.split(r"\s*&&\s*", cmd.strip()):
            argv = shlex.split(part)
            if argv[0] in ("groupadd", "useradd"):
                continue  # the account USER names; ownership is not modelled
            if argv[:3] == ["python", "-m", "venv"] and len(argv) == 4:
                subprocess.run([sys.executable, "-m", "venv", "--without-pip", _in(img.root, argv[3])], check=True)
            elif argv[0].endswith("/bin/pip") and argv[1] == "install" and "-r" in argv:
                self._pip_install(img, argv)
            else:
                raise ImageError(f"RUN {part}: the check does not know what this makes")

    @staticmethod
    def _pip_install(img: Image, argv: list[str]) -> None:
        """pip's install from the lock, by uv (fast, one cache for all images): same file, same
        flags; a flag the check cannot pass on fails instead of being dropped."""
        venv_python = _in(img.root, argv[0]).parent / "python"
        opts = argv[2:]
        req = opts.pop(opts.index("-r") + 1)
        opts.remove("-r")
        unknown = set(opts) - {"--require-hashes", "--no-deps"}
        if unknown:
            raise ImageError(f"pip install {sorted(unknown)}: the check does not pass these on")
        uv_pip = [uv.find_uv_bin(), "pip", "install", "--quiet", "--python", str(venv_python)]
        r = _sh([*uv_pip, *opts, "-r", str(_in(img.root, req))], timeout=240)
        if r.returncode:
            raise ImageError(f"{' '.join(argv)}: exit {r.returncode}\n{r.stderr[-3000:]}")


# Run in the image: `services` must be a regular package (a namespace package would merge any
# other `services` folder on sys.path into it).
PROBE = "import json, services; print(json.dumps(services.__file__))"

# The gateway's app in the image, serving its UI. The lifespan builds the same Gateway once NATS
# and the pool are open; GET / and /assets use neither, so it is built here without them.
GATEWAY_PROBE = """
import json, re
from litestar.testing import TestClient
from services.gateway.app import create_app, ui_dir
from services.gateway.config import GatewayConfig
from services.gateway.state import Gateway

config = GatewayConfig()
app = create_app(config, lifespan_enabled=False)
app.state.gateway = Gateway(config, None, None)
with TestClient(app) as client:
    index = client.get("/")
    asset = re.search(r'"(/assets/[^"]+[.]js)"', index.text)
    js = client.get(asset.group(1)) if asset else None
print(json.dumps({"ui_dir": str(ui_dir(config)), "status": index.status_code, "index": index.text,
                  "asset": asset and asset.group(1), "js": js and [js.status_code, len(js.content)]}))
"""


def check(img: Image, svc: str) -> None:
    """What a container of this image does with no NATS URL; ImageError when it is not right."""
    r = img.run(img.cmd)
    out = r.stdout + r.stderr
    wanted = "configuration error: FLEETWATCH_NATS_URL: expected str (required but not set)"
    if r.returncode != 2 or wanted not in r.stderr or "Traceback" in out:
        raise ImageError(f"CMD {img.cmd}: exit {r.returncode}, wanted 2 and {wanted!r}:\n{out[-3000:]}")
    r = img.run(["python", "-c", PROBE])
    init = _in(img.root, "/app/services/__init__.py")
    if r.returncode or json.loads(r.stdout) != str(init):
        raise ImageError(f"services is not a regular package of the image: {(r.stdout + r.stderr)[-2000:]}")
    if img.healthcheck:
        # Not healthy (nothing is connected) but the probe ran: 0 or 1; 2 is a missing script.
        r = img.run(img.healthcheck, timeout=30)
        if r.returncode not in (0, 1):
            raise ImageError(f"HEALTHCHECK {img.healthcheck}: exit {r.returncode}\n{r.stderr[-2000:]}")
    if svc == "gateway":
        check_gateway_ui(img)


def check_gateway_ui(img: Image) -> None:
    dist = _in(img.root, "/app/ui/dist")
    if not (dist / "index.html").is_file():
        raise ImageError("ui/dist/index.html is not in the gateway image")
    r = img.run(["python", "-c", GATEWAY_PROBE])
    if r.returncode:
        raise ImageError(f"gateway app in the image: exit {r.returncode}\n{r.stderr[-3000:]}")
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["ui_dir"] == str(dist), got["ui_dir"]
    assert got["status"] == 200 and got["index"] == (dist / "index.html").read_text(), got["index"][:500]
    assert got["asset"] and got["js"] == [200, _in(dist, got["asset"]).stat().st_size], got


@pytest.fixture(scope="module")
def builder(tmp_path_factory) -> Builder:
    return Builder(tmp_path_factory.mktemp("image-stages"))


@pytest.mark.parametrize("svc", IMAGES)
def test_image_starts_its_service_from_its_own_files(builder, tmp_path, svc):
    text = (DOCKER / f"{svc}.Dockerfile").read_text()
    img = builder.image(text, tmp_path / "rootfs")
    assert img.cmd == ["python", "-m", f"services.{svc}"]
    check(img, svc)
    # Only the COPY lines' files: the service's own code, nothing the .dockerignore keeps out.
    assert sorted(p.name for p in _in(img.root, "/app/services").iterdir()) == ["__init__.py", svc]
    assert not list(img.root.glob("app/**/__pycache__"))
    assert "FLEETWATCH_NATS_URL" not in img.env


def test_dockerignore_follows_dockers_rules():
    ignored = dockerignore(ROOT / ".dockerignore")
    assert ignored("ui/node_modules/vite/package.json") and ignored("libs/runtime/__pycache__/x.pyc")
    assert ignored("ui/dist/index.html") and ignored(".venv/bin/python")
    assert not ignored("ui/src/main.ts") and not ignored("services/gateway/app.py")
    assert not ignored("libs/build.py")  # `build` is the top-level folder only


# Every COPY line of the collector's final stage, and the gateway's UI: each one missing must
# show. (The build stages' COPY lines feed their RUN lines, which fail without them.)
REMOVALS = [
    ("collector", "COPY --from=build /opt/venv /opt/venv", "'python' is not in the image"),
    ("collector", "COPY libs /app/libs", "No module named 'libs'"),
    ("collector", "COPY services/__init__.py /app/services/__init__.py", "not a regular package"),
    ("collector", "COPY services/collector /app/services/collector", "No module named services.collector"),
    ("collector", "COPY infra/docker/healthcheck.py /opt/fleetwatch/healthcheck.py", "HEALTHCHECK"),
    ("gateway", "COPY --from=ui /ui/dist /app/ui/dist", "ui/dist/index.html is not in the gateway image"),
]


def test_removals_cover_every_copy_line_of_the_collector():
    final = {
        svc: [f"COPY {a}" for op, a in parse((DOCKER / f"{svc}.Dockerfile").read_text())[-1].ops if op == "COPY"]
        for svc in ("collector", "gateway")
    }
    assert sorted(final["collector"]) == sorted(line for svc, line, _ in REMOVALS if svc == "collector")
    assert REMOVALS[-1][1] in final["gateway"]


@pytest.mark.parametrize(("svc", "line", "symptom"), REMOVALS, ids=[r[1].split()[-1] for r in REMOVALS])
def test_check_fails_when_a_copy_line_is_removed(builder, tmp_path, svc, line, symptom):
    text = (DOCKER / f"{svc}.Dockerfile").read_text()
    assert text.count(line + "\n") == 1
    img = builder.image(text.replace(line + "\n", ""), tmp_path / "rootfs")
    with pytest.raises(ImageError, match=re.escape(symptom)):
        check(img, svc)
