#!/usr/bin/env bash
# Checks the deployment files offline (a step of scripts/test.sh):
#   1. deploy/kubernetes/*.yaml against the Kubernetes schemas, strictly
#      (kubernetes-validate from PyPI, in target/deploy-venv); a broken copy
#      must fail, so the check itself is known to work.
#   2. The seccomp profile: every system call a node and the CLI make
#      (scripts/syscall-session.sh under strace) is allowed, the same
#      session passes under the profile (libseccomp, as a runtime applies
#      it), and without io_uring the node refuses to start with a sentence.
#   3. deploy/container/Dockerfile against the manifest (binary path, data
#      directory) and the toolchain (its rust, one Debian release).
#   4. deploy/systemd/squall.service (systemd-analyze verify, where present).
#   5. scripts/launch-hosts.sh --dry-run and scripts/cluster.sh on 3 nodes.
# Needs the release binary (SQUALL_BIN, default target/release/squall).
set -euo pipefail
cd "$(dirname "$0")/.."
SQUALL=${SQUALL_BIN:-target/release/squall}
T=$(mktemp -d)
trap 'CLUSTER_DIR=$T/cluster PORT=7480 ./scripts/cluster.sh down >/dev/null 2>&1 || true; rm -rf "$T"' EXIT
fail() { echo "check-deploy: $*" >&2; exit 1; }
command -v strace >/dev/null && ldconfig -p | grep -q libseccomp.so.2 || ./scripts/install-deps.sh

# 1. Kubernetes
venv=target/deploy-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q kubernetes-validate==1.37.0 >&2
fi
for f in deploy/kubernetes/*.yaml; do
  "$venv/bin/kubernetes-validate" --strict --quiet "$f" || fail "$f does not validate"
done
sed 's/^  replicas: 3$/  replicas: three/' deploy/kubernetes/squall.yaml >"$T/broken.yaml"
grep -q 'replicas: three' "$T/broken.yaml" || fail "the broken copy was not broken"
if "$venv/bin/kubernetes-validate" --strict --quiet "$T/broken.yaml" >/dev/null 2>&1; then
  fail "kubernetes-validate accepted a broken manifest"
fi
echo "check-deploy: Kubernetes manifests valid (strict)" >&2

# 2. seccomp
profile=deploy/kubernetes/seccomp/squall.json
SQUALL_BIN=$SQUALL ./scripts/syscall-session.sh strace >"$T/used"
python3 - "$profile" "$T/used" <<'PY' || fail "the seccomp profile misses system calls"
import json, sys
p = json.load(open(sys.argv[1]))
assert p["defaultAction"] == "SCMP_ACT_ERRNO", "deny by default"
allowed = {n for r in p["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
used = set(open(sys.argv[2]).read().split())
assert len(used) > 30, f"the session saw only {sorted(used)}"
assert {"io_uring_setup", "io_uring_enter", "io_uring_register"} <= used & allowed
missing = sorted(used - allowed)
if missing:
    sys.exit(f"used but not allowed by {sys.argv[1]}: {' '.join(missing)}")
PY
SQUALL_BIN=$SQUALL ./scripts/syscall-session.sh seccomp "$profile" 2>"$T/seccomp.err" ||
  { cat "$T/seccomp.err" >&2; fail "the session fails under $profile"; }
python3 -c "
import json, sys
p = json.load(open('$profile'))
for r in p['syscalls']: r['names'] = [n for n in r['names'] if not n.startswith('io_uring')]
json.dump(p, open('$T/no-uring.json', 'w'))"
if python3 scripts/seccomp-exec.py "$T/no-uring.json" "$SQUALL" node --listen 127.0.0.61:0 \
  --data-dir "$T/no-uring" >/dev/null 2>"$T/no-uring.err"; then
  fail "the node started without io_uring"
fi
grep -q "io_uring is not available here" "$T/no-uring.err" || { cat "$T/no-uring.err" >&2; fail "no clear error without io_uring"; }
echo "check-deploy: seccomp profile allows all $(wc -l <"$T/used") system calls used, and the session passes under it" >&2

# 3. the container image (no container runtime here: its file is checked
# against the manifest and the toolchain the project builds with)
df=deploy/container/Dockerfile
grep -qx 'ENTRYPOINT \["/usr/local/bin/squall"\]' "$df" &&
  grep -q 'command: \["/usr/local/bin/squall"\]' deploy/kubernetes/squall.yaml ||
  fail "$df and the manifest disagree on where squall is"
grep -q -- '--data-dir=/data$' deploy/kubernetes/squall.yaml && grep -qx 'VOLUME /data' "$df" ||
  fail "$df and the manifest disagree on the data directory"
rust=$(rustc --version | awk '{split($2, v, "."); print v[1] "." v[2]}')
build_os=$(sed -n "s/^FROM rust:$rust-slim-\([a-z]*\) AS build$/\1/p" "$df")
[ -n "$build_os" ] || fail "$df does not build with rust $rust"
grep -qx "FROM debian:$build_os-slim" "$df" || fail "$df runs on another Debian release than it builds on"
echo "check-deploy: $df matches the manifest (rust $rust on $build_os)" >&2

# 4. systemd
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify deploy/systemd/squall.service || fail "squall.service does not verify"
  echo "check-deploy: systemd unit verifies" >&2
else
  echo "check-deploy: systemd-analyze missing; the unit is not checked" >&2
fi

# 5. scripts
printf '# hosts\nroot@10.0.0.4 10.0.0.4:7400 8\n\nroot@10.0.0.5 10.0.0.5:7400\n' >"$T/hosts"
./scripts/launch-hosts.sh "$T/hosts" --dry-run >"$T/launch" 2>&1 || { cat "$T/launch" >&2; fail "launch-hosts.sh --dry-run failed"; }
grep -q "^+ scp .*'root@10.0.0.5:/usr/local/bin/squall.new'" "$T/launch" &&
  grep -q "^SQUALL_JOIN=10.0.0.4:7400$" "$T/launch" &&
  grep -q "launch: 2 node(s)" "$T/launch" || { cat "$T/launch" >&2; fail "launch-hosts.sh plans the wrong steps"; }
export CLUSTER_DIR=$T/cluster PORT=7480 SQUALL_BIN=$SQUALL FSYNC=never
./scripts/cluster.sh up 3 2>/dev/null
./scripts/cluster.sh status | grep -q "3 up, 0 down" || fail "cluster.sh: 3 nodes not up"
./scripts/cluster.sh kill 3 2>/dev/null
for _ in $(seq 100); do ./scripts/cluster.sh status | grep -q "2 up, 1 down" && break; sleep 0.1; done
./scripts/cluster.sh status | grep -q "2 up, 1 down" || fail "cluster.sh: the killed node is not down"
./scripts/cluster.sh start 3 2>/dev/null
for _ in $(seq 100); do ./scripts/cluster.sh status | grep -q "3 up, 0 down" && break; sleep 0.1; done
./scripts/cluster.sh status | grep -q "3 up, 0 down" || fail "cluster.sh: the restarted node is not up"
./scripts/cluster.sh down 2>/dev/null
echo "check-deploy: launch-hosts.sh plans, cluster.sh runs 3 nodes" >&2
