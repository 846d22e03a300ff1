#!/usr/bin/env bash
# Watch the agent work: starts the test control plane on 127.0.0.1:8080 and runs the agent
# against it with a 2 s heartbeat, both printing what they do. When podman and a static busybox
# are here (scripts/setup.sh), it also starts a private podman service (its own storage and
# socket, as the tests do), posts a small deployment once the agent has registered, shows its
# status reaching `running`, then its logs as a viewer of the control plane's /ws/logs sees
# them (examples/log-viewer.rs), and leaves it running. Ctrl-C stops everything and removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

listen=${LISTEN:-127.0.0.1:8080}
cargo build --quiet --release --example control-plane --example log-viewer
cargo build --quiet --release --target x86_64-unknown-linux-musl

pids=()
podman_dir=""
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -n "$podman_dir" ]; then
    demo_podman rm --force --all --time 0 >/dev/null 2>&1 || true
    wait 2>/dev/null || true
    rm -rf "$podman_dir"
  fi
}
trap cleanup EXIT

target/release/examples/control-plane --listen "$listen" > >(sed -u "s/^/control-plane | /") &
pids+=($!)
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/${listen%:*}/${listen##*:}") 2>/dev/null && break
  sleep 0.1
done

demo_podman() {
  podman --root "$podman_dir/root" --runroot "$podman_dir/runroot" --tmpdir "$podman_dir/tmp" \
    --storage-driver vfs --runtime runc --cgroup-manager cgroupfs "$@"
}

# A container engine for the deployment, if this machine can run one.
engine_env=()
if command -v podman >/dev/null && [ -x /bin/busybox ] && [ "$(id -u)" = 0 ]; then
  podman_dir=$(mktemp -d /tmp/miaas-demo-podman.XXXXXX)
  printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[network]\nnetwork_config_dir = "%s/networks"\n' \
    "$podman_dir" > "$podman_dir/containers.conf"
  mkdir -p "$podman_dir/image"
  cp /bin/busybox "$podman_dir/image/busybox"
  printf 'FROM scratch\nCOPY busybox /busybox\n' > "$podman_dir/image/Containerfile"
  if demo_podman build --quiet --isolation chroot --tag docker.io/library/nginx:1 "$podman_dir/image" >/dev/null; then
    # In a subshell that execs podman, so that $! is podman itself and the cleanup's kill
    # reaches it (a background job ignores the terminal's Ctrl-C).
    (CONTAINERS_CONF="$podman_dir/containers.conf" exec podman --root "$podman_dir/root" \
      --runroot "$podman_dir/runroot" --tmpdir "$podman_dir/tmp" --storage-driver vfs \
      --runtime runc --cgroup-manager cgroupfs system service --time=0 \
      "unix://$podman_dir/podman.sock" >/dev/null 2>&1) &
    pids+=($!)
    for _ in $(seq 100); do [ -S "$podman_dir/podman.sock" ] && break; sleep 0.1; done
    engine_env=(DOCKER_HOST="unix://$podman_dir/podman.sock")
    echo "demo: podman serves its API at $podman_dir/podman.sock (a busybox image tagged nginx:1)"
  else
    echo "demo: podman cannot build the local image here: no deployment in this demo"
  fi
else
  echo "demo: no podman, /bin/busybox or root here: no deployment in this demo (scripts/setup.sh installs them)"
fi

echo "agent: target/x86_64-unknown-linux-musl/release/miaas-agent (Ctrl-C to stop)"
env CONTROL_PLANE_URL="http://$listen" HEARTBEAT_INTERVAL="${HEARTBEAT_INTERVAL:-2}" "${engine_env[@]}" \
  target/x86_64-unknown-linux-musl/release/miaas-agent "$@" &
agent=$!
pids+=($agent)

if [ ${#engine_env[@]} -gt 0 ]; then
  node=""
  for _ in $(seq 100); do
    node=$(curl -s "http://$listen/api/v1/nodes" | grep -o '"id": *"[^"]*"' | head -1 | sed 's/.*"\([^"]*\)"$/\1/' || true)
    [ -n "$node" ] && break
    sleep 0.1
  done
  if [ -n "$node" ]; then
    compose='services:\n  web:\n    image: nginx:1\n    command: [\"/busybox\", \"httpd\", \"-f\", \"-v\", \"-p\", \"8080\"]\n    ports: [\"127.0.0.1:18080:8080\"]\n    environment:\n      GREETING: ${GREETING}\n  clock:\n    image: nginx:1\n    command: [\"/busybox\", \"sh\", \"-c\", \"while true; do echo tick; echo tock >&2; /busybox sleep 2; done\"]\n'
    echo "demo: POST /api/v1/nodes/$node/deploy (deployment demo-web)"
    curl -s -X POST "http://$listen/api/v1/nodes/$node/deploy" -H 'content-type: application/json' \
      -d "{\"deployment_id\": \"demo-web\", \"template_id\": \"demo\", \"rendered_compose\": \"$compose\", \"env\": {\"GREETING\": \"hello\"}}"
    echo
    for _ in $(seq 120); do
      answer=$(curl -s "http://$listen/api/v1/deployments/demo-web")
      echo "demo: GET /api/v1/deployments/demo-web → $answer"
      case $answer in *'"status":"running"'*|*'"status": "running"'*|*'"status":"failed"'*|*'"status": "failed"'*) break ;; esac
      sleep 0.5
    done
    echo "demo: demo-web stays up while the demo runs (http://127.0.0.1:18080/)"
    echo "demo: its logs, as a viewer of ws://$listen/ws/logs?deployment=demo-web sees them:"
    target/release/examples/log-viewer "$listen" demo-web > >(sed -u "s/^/viewer | /") &
    pids+=($!)
    curl -s -o /dev/null "http://127.0.0.1:18080/" || true
  fi
fi
wait "$agent" || true
