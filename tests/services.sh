#!/usr/bin/env bash
# Makes sure the services the tests talk to are up: PostgreSQL and Redis (and that the
# prometheus and nginx binaries are installed).
# They are normally started before the session; this starts (or installs) them otherwise.
set -euo pipefail

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v pg_ctlcluster >/dev/null || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "services: installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Debian's real Prometheus server: tests/test_metrics_prometheus.py scrapes kefu with it.
# Installed only, never started here (the test runs its own on a free port).
if ! command -v prometheus >/dev/null; then
  apt-get update -qq
  candidate=$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
    echo "services: installing prometheus $candidate"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "services: no prometheus package available; the Prometheus scrape test cannot run" >&2
  fi
fi

# Debian's nginx: tests/test_deploy_lb.py runs deploy/compose/nginx/nginx.conf in front of two
# kefu nodes, tests/test_deploy_files.py checks it with `nginx -t`. Installed only: RUNLEVEL=1
# keeps the package from starting a system nginx on port 80.
if ! command -v nginx >/dev/null; then
  apt-get update -qq
  echo "services: installing nginx-light"
  RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "services: starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi

for _ in $(seq 1 50); do
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
    # the test database: present on these machines; created where it is not
    if ! psql -h 127.0.0.1 -U postgres -lqt 2>/dev/null | cut -d'|' -f1 | grep -qw test; then
      createdb -h 127.0.0.1 -U postgres test 2>/dev/null || true
    fi
    echo "services: redis and postgresql are up"
    exit 0
  fi
  sleep 0.2
done
echo "services: redis or postgresql did not come up" >&2
exit 1
