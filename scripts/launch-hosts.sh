#!/usr/bin/env bash
# Starts a Squall cluster on bare metal: one node per host, over ssh, as the
# systemd service in deploy/systemd/squall.service.
#
#   ./scripts/launch-hosts.sh HOSTS_FILE [--dry-run]
#
# HOSTS_FILE: one host per line, `SSH_TARGET LISTEN_ADDR [SHARDS]`, e.g.
#   root@10.0.0.4  10.0.0.4:7400  8
#   root@10.0.0.5  10.0.0.5:7400  8
# (# comments and blank lines are skipped). The first host starts alone;
# every other joins through the hosts before it. Each gets the binary
# (SQUALL_BIN, default target/release/squall), the unit, and
# /etc/squall/squall.env; SQUALL_FLAGS is passed on to every node (e.g.
# "--auth-token-file /etc/squall/tokens" — copy the file there first).
# SSH and SCP override the commands (default: ssh / scp with
# BatchMode=yes). --dry-run prints what would run and runs nothing. On an
# authenticated cluster, set SQUALL_TOKEN for the status checks.
#
# Removing a node: `ssh HOST systemctl stop squall` (it leaves the cluster
# gracefully); adding one: append it to the file and run this again (hosts
# already running are left as they are).
set -euo pipefail
cd "$(dirname "$0")/.."

hosts_file=${1:?usage: launch-hosts.sh HOSTS_FILE [--dry-run]}
dry=${2:-}
SQUALL=${SQUALL_BIN:-target/release/squall}
SSH=${SSH:-ssh -o BatchMode=yes}
SCP=${SCP:-scp -o BatchMode=yes -q}

run() { # prints, and runs unless --dry-run
  echo "+ $*"
  [ "$dry" = "--dry-run" ] || eval "$@"
}

[ "$dry" = "--dry-run" ] || [ -x "$SQUALL" ] || cargo build --release --locked -p dataplane

seeds=""
n=0
while read -r target listen shards _; do
  case "$target" in ''|'#'*) continue ;; esac
  [ -n "$listen" ] || { echo "launch: $hosts_file: no LISTEN_ADDR for $target" >&2; exit 2; }
  env_file=$(printf 'SQUALL_LISTEN=%s\nSQUALL_JOIN=%s\nSQUALL_SHARDS=%s\nSQUALL_FLAGS=%s\n' \
    "$listen" "$seeds" "${shards:-0}" "${SQUALL_FLAGS:-}")
  run "$SCP '$SQUALL' '$target:/usr/local/bin/squall.new'"
  run "$SCP deploy/systemd/squall.service '$target:/etc/systemd/system/squall.service'"
  run "$SSH '$target' \"mkdir -p /etc/squall && mv /usr/local/bin/squall.new /usr/local/bin/squall && printf '%s' '$env_file' > /etc/squall/squall.env && systemctl daemon-reload && (systemctl is-active -q squall || systemctl enable --now squall)\""
  # Ready once it answers; later hosts join through it.
  run "for i in \$(seq 60); do '$SQUALL' cluster status --addr '$listen' --client-timeout-ms 1000 >/dev/null 2>&1 && break; sleep 1; done"
  seeds=${seeds:+$seeds,}$listen
  n=$((n + 1))
done <"$hosts_file"
[ "$n" -gt 0 ] || { echo "launch: $hosts_file lists no host" >&2; exit 2; }
echo "launch: $n node(s); seeds $seeds" >&2
[ "$dry" = "--dry-run" ] || "$SQUALL" cluster status --addr "${seeds%%,*}"
