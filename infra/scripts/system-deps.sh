#!/usr/bin/env bash
# Install the machine packages fleetwatch's dev stack and tests need, when missing.
# Debian/Ubuntu names; without root it only says what is missing.
#   system-deps.sh run   what `make run` needs (PostgreSQL, npm for the UI build)
#   system-deps.sh test  plus what the tests drive (systemd, libnss-pgsql2, Chromium, sshd)
set -euo pipefail
mode=${1:-run}
need=()
have_pg() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }
have_pg || need+=(postgresql)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ "$mode" = test ]; then
# The NSS module that serves the replicator's local copy (tests/test_replicator_nss.py).
compgen -G '/lib/libnss_pgsql.so.2' >/dev/null || compgen -G '/usr/lib/*/libnss_pgsql.so.2' >/dev/null || need+=(libnss-pgsql2)
# The commander's systemd backend is tested against a real systemd in a private namespace
# (tests/support/systemd_ns.py), and its process backend runs a Node app.
[ -x /lib/systemd/systemd ] && command -v journalctl >/dev/null 2>&1 || need+=(systemd)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
# The web UI is tested in Debian's Chromium (tests/test_ui*.py).
[ -x /usr/bin/chromium ] || need+=(chromium)
# sshd accepting a replicated account (tests/test_replicator_nss.py). policy-rc.d below keeps
# the package from starting a real sshd on install.
command -v /usr/sbin/sshd >/dev/null 2>&1 || need+=(openssh-server)
# Prometheus interop is tested with real clients: promtool and a Prometheus server (query API,
# federation, agent-mode remote-write) scraping a real node_exporter (tests/test_prometheus_*.py).
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
fi
for extra in ${FLEETWATCH_EXTRA_DEBS:-}; do dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra"); done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${need[*]} — install them (e.g. apt-get install ${need[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Keep Debian's maintainer scripts from starting stock services (PostgreSQL's default cluster).
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1; fi
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
[ "$created" = 1 ] && rm -f "$policy"
exit 0
