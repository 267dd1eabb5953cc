"""schemathesis against the gateway's own OpenAPI document: generated requests to every
operation (as admin, so the handlers run, not just the guard) never get a response that breaks
the document's schema, and the gateway's own routes never answer 5xx. Routes that forward to a
host's agent (commander, replicator: no agent answers for generated host names, so they answer a
documented 503/504) are checked for schema conformance only. The live streams are left out
(they never end)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from libs.embedded.stack import NatsStack
from tests.conftest import TEST_HOSTS
from tests.support.alerting import alerter_process  # noqa: F401 (fixture: the alerting routes need an alerter)
from tests.support.gateway import apply_ingest_schema, create_database, drop_database, running_gateway

pytestmark = pytest.mark.timeout(660)

ST = Path(sys.executable).with_name("schemathesis")
AGENT_ROUTES = r"^/api/v1/(hosts/\{host\}/(apps|jobs|scan|replication)|webhook)"
STREAMS = r"(^/api/v1/stream$|/stream$)"


@pytest.fixture(scope="module")
def nats_stack(workdir):
    """This module's own nats-server (overrides the session one): KV state other tests leave
    behind (notifiers pointing at servers long gone, ...) must not decide what this test sees."""
    st = NatsStack(workdir / f"nats-st-{uuid.uuid4().hex[:8]}", TEST_HOSTS).start()
    yield st
    st.stop()


@pytest.fixture(scope="module")
async def st_db(pg_cluster):
    dsn = await create_database(pg_cluster.dsn, "gwst")
    await apply_ingest_schema(dsn)
    yield dsn
    await drop_database(pg_cluster.dsn, dsn)


def test_openapi_document_holds_under_generated_requests(nats_stack, st_db, workdir, alerter_process):
    assert ST.exists() or shutil.which("schemathesis"), "schemathesis is in the dev dependencies"
    with running_gateway(nats_stack, st_db, workdir / "gw-st", sample_timeout_s="0.2") as gw:
        token = gw.token("admin")
        base = [
            str(ST if ST.exists() else shutil.which("schemathesis")),
            "run",
            f"{gw.url}/api/docs/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "6",
            "--seed",
            "20261122",
            "--request-timeout",
            "20",
            "--phases",
            "examples,coverage,fuzzing",
        ]
        runs = [
            [
                "--checks",
                "not_a_server_error,response_schema_conformance",
                "--exclude-path-regex",
                f"{AGENT_ROUTES}|{STREAMS}",
            ],
            [
                "--checks",
                "response_schema_conformance",
                "--include-path-regex",
                AGENT_ROUTES,
                "--exclude-path-regex",
                STREAMS,
            ],
        ]
        for extra in runs:
            r = subprocess.run(base + extra, capture_output=True, text=True, timeout=300, cwd=workdir)
            out = r.stdout + r.stderr
            assert r.returncode == 0, (
                out[-6000:]
                + "\n--- gateway log (errors) ---\n"
                + "\n".join(line for line in gw.log().splitlines() if '"error"' in line)[-4000:]
            )
            tested = re.search(r"Tested: (\d+)", out)
            assert tested and int(tested.group(1)) > 0, out[-2000:]
