#!/usr/bin/env bash
# Installs the agent on a host without containers, as a hardened systemd service:
#
#   scp dist/x86_64-unknown-linux-musl/miaas-agent scripts/install.sh node:
#   ssh node sudo CONTROL_PLANE_URL=http://cp:8080 ./install.sh ./miaas-agent
#   ssh node sudo ./install.sh --uninstall
#
# Installs /usr/local/bin/miaas-agent, /etc/miaas-agent.env (kept if it exists: it holds the
# node's settings) and /etc/systemd/system/miaas-agent.service, then enables and starts the
# service. With DESTDIR set, everything goes under that directory and systemctl is not run
# (for packaging, and for the tests).
#
# NVIDIA_DEVICES=yes also writes miaas-agent.service.d/nvidia.conf, which lets the agent and the
# nvidia-smi it runs open /dev/nvidiactl and /dev/nvidiaN (the unit's PrivateDevices=yes hides
# them; without them NVIDIA GPUs are described from sysfs, with no memory size or utilisation).
# Default: no.
set -euo pipefail

destdir=${DESTDIR:-}
bin=$destdir/usr/local/bin/miaas-agent
env_file=$destdir/etc/miaas-agent.env
unit=$destdir/etc/systemd/system/miaas-agent.service
nvidia_dropin=$destdir/etc/systemd/system/miaas-agent.service.d/nvidia.conf
nvidia_devices=${NVIDIA_DEVICES:-no}

die() {
  echo "install: $*" >&2
  exit 1
}

# systemctl only on the real root: under DESTDIR there is no running systemd to tell.
systemctl_() {
  if [ -z "$destdir" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl "$@"
  fi
}

if [ "${1:-}" = --uninstall ]; then
  systemctl_ disable --now miaas-agent.service || true
  rm -f "$bin" "$unit" "$env_file" "$nvidia_dropin"
  rmdir "$(dirname "$nvidia_dropin")" 2>/dev/null || true
  systemctl_ daemon-reload
  echo "install: removed the miaas-agent binary, unit and environment file" >&2
  exit 0
fi

case "$nvidia_devices" in
  yes | no) ;;
  *) die "NVIDIA_DEVICES must be yes or no, not '$nvidia_devices'" ;;
esac

source_bin=${1:-./miaas-agent}
[ -f "$source_bin" ] || die "no binary at $source_bin (usage: install.sh [PATH-TO-miaas-agent] | --uninstall)"
# Refuse a binary this host cannot run before anything is changed.
"$source_bin" --version >/dev/null 2>&1 || die "$source_bin does not run on this host (wrong architecture?)"

install -D -m 0755 "$source_bin" "$bin"

if [ -e "$env_file" ]; then
  echo "install: keeping the existing $env_file" >&2
else
  install -d "$(dirname "$env_file")"
  # The control plane from the installer's environment, the other settings commented out at
  # their defaults (see `miaas-agent --help`).
  cat >"$env_file" <<EOF
# Settings of miaas-agent (systemd reads this file; \`miaas-agent --help\` describes each).
# Restart after a change: systemctl restart miaas-agent
CONTROL_PLANE_URL=${CONTROL_PLANE_URL:-http://localhost:8080}
#HEARTBEAT_INTERVAL=30
#NODE_NAME=
#NODE_IP=auto
#LOG_LEVEL=info
#LOG_FORMAT=text
#DISK_PATH=/
#DEPLOYMENTS=on
#NODE_TAGS=
#REDETECT_INTERVAL=300
EOF
  chmod 0644 "$env_file"
fi

# Deployments (README, "Deployments") use the container engine's socket: the unit adds the
# socket's group (root:docker, or podman's root:root, 0660) to the agent's dynamic user. What
# this grants: whoever can use the socket is root on this host, so a control plane that can
# deploy to it can start privileged containers and mount any host path here. ENGINE_GROUP=NAME
# names the group; ENGINE_GROUP= (empty) installs an agent that cannot reach the engine (set
# DEPLOYMENTS=off in the env file then). By default: the group of the first engine socket found.
if [ -n "${ENGINE_GROUP+set}" ]; then
  engine_group=$ENGINE_GROUP
else
  engine_group=
  for socket in /var/run/docker.sock /run/docker.sock /run/podman/podman.sock; do
    if [ -S "$socket" ]; then
      engine_group=$(stat -c %G "$socket")
      break
    fi
  done
fi
if [ -n "$engine_group" ]; then
  engine_access="# The engine's socket, for deployments: whoever can use it is root on this host.
SupplementaryGroups=$engine_group"
else
  engine_access="# No engine socket found at install time: deployments cannot reach an engine.
#SupplementaryGroups=docker"
  echo "install: no container engine socket found: the agent cannot deploy (ENGINE_GROUP=NAME names the socket's group)" >&2
fi

install -d "$(dirname "$unit")"
cat >"$unit" <<'EOF'
[Unit]
Description=MIaaS node agent
Wants=network-online.target
After=network-online.target
# Restart=always below may restart it forever.
StartLimitIntervalSec=0

[Service]
EnvironmentFile=/etc/miaas-agent.env
ExecStart=/usr/local/bin/miaas-agent
# The agent retries the control plane by itself and never exits on its own; a restart is for a
# crash or a kill. Back off from 2 s to 60 s and never stop trying (RestartSteps and
# RestartMaxDelaySec need systemd 254; older ones ignore them and wait 2 s each time).
Restart=always
RestartSec=2s
RestartSteps=10
RestartMaxDelaySec=60s
# SIGTERM ends it at once with exit code 0.
KillSignal=SIGTERM
TimeoutStopSec=5s

# It reads /proc, /sys and statvfs of the node's disks, talks HTTP and to the engine's socket (a
# socket can be connected to on the read-only file system): nothing else is allowed.
DynamicUser=yes
@ENGINE_ACCESS@
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
# read-only, not yes: `yes` mounts an empty directory over /home, /root and /run/user, and the
# disk mounted at /home would be reported with that directory's size (capabilities.disks).
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
UMask=0077
# A small agent: a runaway one is stopped, not the node.
MemoryMax=64M
TasksMax=16

[Install]
WantedBy=multi-user.target
EOF
# The engine's group, where the unit says.
unit_text=$(cat "$unit")
printf '%s\n' "${unit_text/@ENGINE_ACCESS@/$engine_access}" >"$unit"
chmod 0644 "$unit"

if [ "$nvidia_devices" = yes ]; then
  install -d "$(dirname "$nvidia_dropin")"
  cat >"$nvidia_dropin" <<'EOF'
# Written by install.sh with NVIDIA_DEVICES=yes: nvidia-smi, which the agent runs for the GPUs'
# memory and utilisation, opens /dev/nvidiactl and /dev/nvidiaN (character major
# "nvidia-frontend" in /proc/devices) read-write. The host's /dev is shown instead of a private
# one, and the device cgroup still allows only those and the standard pseudo devices.
[Service]
PrivateDevices=no
DevicePolicy=closed
DeviceAllow=char-nvidia-frontend rw
EOF
  chmod 0644 "$nvidia_dropin"
else
  rm -f "$nvidia_dropin"
  if [ -z "$destdir" ] && [ -e /proc/driver/nvidia/version ]; then
    echo "install: this host has the NVIDIA driver; install with NVIDIA_DEVICES=yes to let the agent run nvidia-smi (GPU memory and utilisation)" >&2
  fi
fi

systemctl_ daemon-reload
systemctl_ enable --now miaas-agent.service
echo "install: installed $bin, $env_file and $unit" >&2
