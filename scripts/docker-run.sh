#!/usr/bin/env bash
# Runs a Docker container on the VNet: the container starts with
# --network none and the node's CNI plugins attach it (CNI ADD on its
# network namespace, with K8S_POD_NAMESPACE=<container-namespace> and
# K8S_POD_NAME=<container-name>), giving it an address from the NIC's pool.
#
#   docker-run.sh <container-name> <container-namespace> <image> [command...]
#       prints the container's IP address
#   docker-run.sh --remove <container-name>
#       detaches the container (CNI DEL releases the address), then docker rm
#
# Environment (defaults are a real node's):
#   DOCKER            docker client                      (docker)
#   DOCKER_HOST       daemon socket                      (docker's default)
#   CNI_PATH          plugin directories                 (/opt/cni/bin)
#   CNI_CONF_DIR      network configuration directory    (/etc/cni/net.d)
#   CNI_CACHE_DIR     libcni's result cache              (/var/lib/cni)
#   AZURE_VNET_STATE_DIR, AZURE_VNET_LOG_FILE            passed to the plugins
#   VNET_HOST_NETNS   run the plugins in this network namespace path (a lab VM)
#   VNETCTL           vnetctl, which drives the plugins through libcni
#                     (PATH, else next to this script, else in CNI_PATH)
set -euo pipefail

usage() {
  echo "usage: $0 <container-name> <container-namespace> <image> [command...]" >&2
  echo "       $0 --remove <container-name>" >&2
  exit 2
}

docker=${DOCKER:-docker}
export CNI_PATH=${CNI_PATH:-/opt/cni/bin}
export CNI_CONF_DIR=${CNI_CONF_DIR:-/etc/cni/net.d}
export CNI_CACHE_DIR=${CNI_CACHE_DIR:-/var/lib/cni}
here=$(cd "$(dirname "$0")" && pwd)
vnetctl=${VNETCTL:-}
if [ -z "$vnetctl" ]; then
  for c in "$(command -v vnetctl || true)" "$here/vnetctl" "$here/../bin/vnetctl" "${CNI_PATH%%:*}/vnetctl"; do
    if [ -n "$c" ] && [ -x "$c" ]; then vnetctl=$c; break; fi
  done
fi
[ -n "$vnetctl" ] || { echo "docker-run.sh: vnetctl not found (set VNETCTL)" >&2; exit 1; }

label=io.vnetcni.namespace

if [ "${1:-}" = "--remove" ]; then
  [ $# -eq 2 ] || usage
  name=$2
  id=$("$docker" inspect --format '{{.Id}}' "$name")
  pid=$("$docker" inspect --format '{{.State.Pid}}' "$id")
  ns=$("$docker" inspect --format "{{index .Config.Labels \"$label\"}}" "$id")
  netns=
  if [ "$pid" -gt 0 ] 2>/dev/null; then netns=/proc/$pid/ns/net; fi
  # DEL first, while the namespace still exists; an empty netns is fine:
  # the plugin still releases the address and the host side.
  "$vnetctl" cni del --container-id "$id" --netns "$netns" --pod-namespace "$ns" --pod-name "$name"
  "$docker" rm --force "$id" >/dev/null
  exit 0
fi

[ $# -ge 3 ] || usage
name=$1 ns=$2 image=$3
shift 3
id=$("$docker" run --detach --name "$name" --network none --label "$label=$ns" "$image" "$@")
pid=$("$docker" inspect --format '{{.State.Pid}}' "$id")
if ! ip=$("$vnetctl" cni add --container-id "$id" --netns "/proc/$pid/ns/net" --pod-namespace "$ns" --pod-name "$name" --output ip); then
  "$vnetctl" cni del --container-id "$id" --netns "/proc/$pid/ns/net" --pod-namespace "$ns" --pod-name "$name" || true
  "$docker" rm --force "$id" >/dev/null || true
  echo "docker-run.sh: attaching $name failed; container removed" >&2
  exit 1
fi
echo "$ip"
