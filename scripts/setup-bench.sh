#!/usr/bin/env bash
# Installs what make bench needs beyond scripts/setup.sh: sockperf (TCP
# request/response latency) and GNU time (peak RSS of a plugin call, see
# lab/bench). Idempotent. Run as root.
set -euo pipefail
# shellcheck source=lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"

pkgs=()
command -v sockperf >/dev/null 2>&1 || pkgs+=(sockperf)
[ -x /usr/bin/time ] || pkgs+=(time)
if [ "${#pkgs[@]}" -gt 0 ]; then
  echo "setup-bench: installing ${pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends "${pkgs[@]}"
fi
