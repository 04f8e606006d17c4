#!/usr/bin/env bash
# The main job: bring up the seed's example cluster as an emulated Azure VNet
# on this machine, start a few pods on every VM through the real plugins,
# and print the connectivity matrix and the lab's status. Leaves it running.
set -euo pipefail
cd "$(dirname "$0")/.."
vnetctl=bin/vnetctl
mode=${MODE:-bridge}

start=$(date +%s%N)
$vnetctl lab down >/dev/null 2>&1 || true
$vnetctl lab up --mode "$mode"
echo
for vm in master-0 vm-1 vm-2; do
  if [ "$vm" = vm-1 ]; then
    $vnetctl lab pods add "$vm" web-1 --port 30080:8080
  else
    $vnetctl lab pods add "$vm" web-1
  fi
  $vnetctl lab pods add "$vm" web-2
done
echo
status=0
$vnetctl lab check || status=$?
echo
$vnetctl lab status
echo
echo "demo took $(( ($(date +%s%N) - start) / 1000000 )) ms. The lab is still running; look around with"
echo "  bin/vnetctl lab status | bin/vnetctl lab check | ip netns exec lab-vm-1-web-1 ip addr"
echo "and remove it with:"
echo "  bin/vnetctl lab down"
exit $status
