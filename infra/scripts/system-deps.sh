#!/usr/bin/env bash
# Install the machine packages fleetwatch's dev stack and tests need, when missing.
# Debian/Ubuntu names; without root it only says what is missing.
set -euo pipefail
need=()
have_pg() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; }
have_pg || need+=(postgresql)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
# The NSS module that serves the replicator's local copy (tests/test_replicator_nss.py).
compgen -G '/lib/libnss_pgsql.so.2' >/dev/null || compgen -G '/usr/lib/*/libnss_pgsql.so.2' >/dev/null || need+=(libnss-pgsql2)
# The commander's systemd backend is tested against a real systemd in a private namespace
# (tests/support/systemd_ns.py), and its process backend runs a Node app.
[ -x /lib/systemd/systemd ] && command -v journalctl >/dev/null 2>&1 || need+=(systemd)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v node >/dev/null 2>&1 || need+=(nodejs)
# The web UI is built with npm (ui/package-lock.json) and tested in Debian's Chromium (tests/test_ui*.py).
command -v npm >/dev/null 2>&1 || need+=(npm)
[ -x /usr/bin/chromium ] || need+=(chromium)
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
