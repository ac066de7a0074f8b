#!/usr/bin/env bash
# Installs what the test suite needs beyond npm packages (runs as `npm test`'s pretest step).
# openssl (Debian package): the CA tests check certificates and CRLs with the real openssl.
# curl (Debian package): the HTTPS API tests call the node with `curl --cacert` as an operator would.
# postgresql (Debian package): test/helpers/postgres.ts runs throwaway servers from
# /usr/lib/postgresql/<ver>/bin (initdb, pg_ctl, postgres, pg_isready) and the tests talk to them with psql.
set -euo pipefail

have_pg_server () {
  local bin
  for bin in /usr/lib/postgresql/*/bin; do
    [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] && [ -x "$bin/postgres" ] && [ -x "$bin/pg_isready" ] && return 0
  done
  return 1
}

missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ! have_pg_server || ! command -v psql >/dev/null 2>&1; then missing+=(postgresql); fi
# as root the helper runs the server as this user (postgres refuses to run as root); the package creates it
if [ "$(id -u)" -eq 0 ] && ! getent passwd postgres >/dev/null && [[ " ${missing[*]} " != *' postgresql '* ]]; then
  useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "tests need the Debian packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})" >&2
  exit 1
fi
if [[ " ${missing[*]} " == *' postgresql '* ]]; then
  # The tests start their own servers on free loopback ports. On a first install the postgresql-<ver>
  # postinst would create (and try to start) a default 'main' cluster on port 5432; its pg_conftool
  # reads createcluster.conf, which includes this directory, so this drop-in turns that off.
  mkdir -p /etc/postgresql-common/createcluster.d
  printf '# written by bkg scripts/test-deps.sh: tests run their own servers\ncreate_main_cluster = false\n' \
    > /etc/postgresql-common/createcluster.d/00-bkg-no-main-cluster.conf
fi
echo "installing ${missing[*]} for the tests" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
if [[ " ${missing[*]} " == *' postgresql '* ]] && ! have_pg_server; then
  echo 'installed postgresql but found no initdb/pg_ctl/postgres/pg_isready under /usr/lib/postgresql/*/bin' >&2
  exit 1
fi
