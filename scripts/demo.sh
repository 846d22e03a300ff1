#!/usr/bin/env bash
# Watch the agent work: starts the test control plane on 127.0.0.1:8080 and runs the agent
# against it with a 2 s heartbeat, both printing what they do. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

listen=${LISTEN:-127.0.0.1:8080}
cargo build --quiet --release --example control-plane
cargo build --quiet --release --target x86_64-unknown-linux-musl

target/release/examples/control-plane --listen "$listen" > >(sed -u "s/^/control-plane | /") &
control_plane=$!
trap 'kill $control_plane 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/${listen%:*}/${listen##*:}") 2>/dev/null && break
  sleep 0.1
done

echo "agent: target/x86_64-unknown-linux-musl/release/miaas-agent (Ctrl-C to stop)"
CONTROL_PLANE_URL="http://$listen" HEARTBEAT_INTERVAL="${HEARTBEAT_INTERVAL:-2}" \
  target/x86_64-unknown-linux-musl/release/miaas-agent "$@" || true
