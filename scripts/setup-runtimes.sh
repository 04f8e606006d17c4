#!/usr/bin/env bash
# Installs what the runtime tests (make e2e-runtimes) and benchmarks need on a
# Debian machine: containerd and runc, podman, Docker (docker.io), the
# reference CNI plugins (containernetworking-plugins, in /usr/lib/cni) and
# cnitool (into bin/). Idempotent; run as root.
#
# No service is started: Debian's packages would start containerd and dockerd
# through invoke-rc.d, so a policy-rc.d that forbids it is put in place for
# the install if the machine has none. The tests start their own daemons, in
# lab namespaces, and end them by PID.
set -euo pipefail
# shellcheck source=lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || pkgs+=("$2"); }
need containerd containerd
need runc runc
need podman podman
need dockerd docker.io
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || pkgs+=(containernetworking-plugins)
need nsenter util-linux
if [ "${#pkgs[@]}" -gt 0 ]; then
  echo "setup-runtimes: installing ${pkgs[*]}" >&2
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# vnetcni setup-runtimes: no service starts during the install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_get update -qq
  status=0
  apt_get install -y -qq --no-install-recommends "${pkgs[@]}" || status=$?
  if [ -n "$made_policy" ]; then rm -f "$policy"; fi
  [ "$status" -eq 0 ] || exit "$status"
fi

# cnitool, pinned to the CNI library version the project uses.
if [ ! -x bin/cnitool ]; then
  echo "setup-runtimes: go install cnitool@v1.3.1 into bin/" >&2
  mkdir -p bin
  GOBIN="$PWD/bin" go install github.com/containernetworking/cni/cnitool@v1.3.1
fi
