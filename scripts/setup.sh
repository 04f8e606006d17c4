#!/usr/bin/env bash
# Installs what building, the tests and the lab need on a Debian machine.
# Idempotent: installs only what is missing. Run as root.
set -euo pipefail
# shellcheck source=lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"

export PATH="/usr/local/go/bin:$PATH"
pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || pkgs+=("$2"); }
need nft nftables
need ip iproute2
need nsenter util-linux
need make make
need git git
need curl curl
need iperf3 iperf3
# The firewall cases: Docker's FORWARD DROP with either iptables backend.
need iptables-legacy iptables
# The lab's VMs keep their address from the fabric's DHCP with a real client.
need udhcpc udhcpc
if [ "${#pkgs[@]}" -gt 0 ]; then
  echo "setup: installing ${pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends "${pkgs[@]}"
fi
if ! command -v go >/dev/null 2>&1; then
  echo "setup: Go is required (expected at /usr/local/go/bin/go)" >&2
  exit 1
fi
