#!/usr/bin/env bash
# Installs the vnetcni Azure VNet CNI plugins on this node.
#
#   install-cni-plugin.sh [version] [tarball]
#
# The release is taken from, in order: the tarball argument (a path, or an
# http(s) URL fetched with curl); azure-vnet-cni-linux-amd64-<version>.tgz
# in the current directory or in dist/ beside this script; the directory
# this script sits in, when it is an unpacked release. Without a version,
# the newest dist/ tarball is used.
#
# Installs azure-vnet, azure-vnet-ipam, portmap, loopback (and vnetctl,
# docker-run.sh when the release has them) into $CNI_BIN_DIR (/opt/cni/bin)
# and 10-azure.conflist into $CNI_CONF_DIR (/etc/cni/net.d). Idempotent:
# identical files are left alone, binaries are replaced atomically. An
# existing conflist that differs is kept, unless --force or
# REPLACE_CONFLIST=1 (the old one is then kept as .bak). Finally runs the
# installed azure-vnet --version (and checks it names the version asked for).
# Bridge mode needs br_netfilter: it is named in $MODULES_LOAD_DIR
# (/etc/modules-load.d)/azure-vnet.conf for boot and loaded now if it is not.
# Where cloud-init is installed, $CLOUD_INIT_DIR (/etc/cloud/cloud.cfg.d)
# gets a drop-in that keeps it from putting the NIC's secondary IPs on eth0.
# Where systemd-networkd and NetworkManager keep their configuration,
# $NETWORKD_DIR (/etc/systemd/network) and $NETWORKMANAGER_DIR
# (/etc/NetworkManager/conf.d) get drop-ins that keep them off the bridge
# (azure*) and the pods' host veths (azv*).
#
# The node must forward before its first pod arrives (a NodePort forwards to
# pods on other nodes): turns on net.ipv4.ip_forward in the current network
# namespace and persists it in $SYSCTL_DIR/90-azure-vnet.conf (/etc/sysctl.d;
# empty: not persisted). ENABLE_IP_FORWARD=0 leaves forwarding alone.
#
# When the release has vnetd (the node agent) and vnetd.service, installs
# vnetd beside the plugins and the unit into $SYSTEMD_UNIT_DIR
# (/etc/systemd/system), its ExecStart pointing at the installed vnetd.
# Where systemd runs and the unit directory is the default, enables and
# starts it (restarts it when either changed); otherwise says so.
set -euo pipefail

bin_dir=${CNI_BIN_DIR:-/opt/cni/bin}
conf_dir=${CNI_CONF_DIR:-/etc/cni/net.d}
modules_dir=${MODULES_LOAD_DIR-/etc/modules-load.d}
cloud_dir=${CLOUD_INIT_DIR-/etc/cloud/cloud.cfg.d}
networkd_dir=${NETWORKD_DIR-/etc/systemd/network}
nm_dir=${NETWORKMANAGER_DIR-/etc/NetworkManager/conf.d}
replace=${REPLACE_CONFLIST:-0}
forward=${ENABLE_IP_FORWARD:-1}
sysctl_dir=${SYSCTL_DIR-/etc/sysctl.d}
unit_dir=${SYSTEMD_UNIT_DIR:-/etc/systemd/system}
conflist=10-azure.conflist
unit=vnetd.service
binaries=(azure-vnet-standalone azure-vnet azure-vnet-ipam portmap loopback)
optional=(vnetctl docker-run.sh)

args=()
for a in "$@"; do
  case "$a" in
    --force) replace=1 ;;
    -h|--help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "install-cni-plugin.sh: unknown option $a" >&2; exit 2 ;;
    *) args+=("$a") ;;
  esac
done
version=${args[0]:-}
tarball=${args[1]:-}
here=$(cd "$(dirname "$0")" && pwd)
say() { echo "install-cni-plugin: $*"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Find the release.
src=
if [ -z "$tarball" ] && [ -n "$version" ]; then
  name=azure-vnet-cni-linux-amd64-$version.tgz
  for c in "$PWD/$name" "$here/../dist/$name" "$here/$name"; do
    if [ -f "$c" ]; then tarball=$c; break; fi
  done
fi
if [ -z "$tarball" ] && [ -z "$version" ]; then
  if [ -x "$here/azure-vnet" ] && [ -f "$here/$conflist" ]; then
    src=$here
  else
    tarball=$(ls -t "$here"/../dist/azure-vnet-cni-linux-amd64-*.tgz 2>/dev/null | head -n 1 || true)
  fi
fi
if [ -z "$src" ]; then
  if [ -z "$tarball" ]; then
    echo "install-cni-plugin.sh: no release found${version:+ for $version}; pass the tarball: $0 [version] TARBALL" >&2
    exit 1
  fi
  case "$tarball" in
    http://*|https://*)
      say "downloading $tarball"
      curl -fsSL -o "$work/release.tgz" "$tarball"
      tarball=$work/release.tgz ;;
  esac
  mkdir -p "$work/release"
  tar -xzf "$tarball" -C "$work/release"
  src=$work/release
fi
for f in "${binaries[@]}" "$conflist"; do
  [ -f "$src/$f" ] || { echo "install-cni-plugin.sh: the release lacks $f" >&2; exit 1; }
done

# The release must be the version asked for, before anything is written.
if [ -n "$version" ]; then
  got=$("$src/azure-vnet" --version)
  if [ "${got##* }" != "$version" ]; then
    echo "install-cni-plugin.sh: the release's azure-vnet says \"$got\", want version $version; nothing installed" >&2
    exit 1
  fi
fi

# place SRC DST MODE: install unless identical; atomic rename. Sets
# changed=1 when it wrote.
changed=0
place() {
  local from=$1 to=$2 mode=$3 tmp
  if [ -f "$to" ] && cmp -s "$from" "$to"; then
    chmod "$mode" "$to"
    say "$to unchanged"
    return
  fi
  changed=1
  local what=installed
  [ -e "$to" ] && what=updated
  tmp=$(mktemp "$(dirname "$to")/.$(basename "$to").tmp-XXXXXX")
  cp "$from" "$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$to"
  say "$to $what"
}

mkdir -p "$bin_dir" "$conf_dir"
for b in "${binaries[@]}"; do
  place "$src/$b" "$bin_dir/$b" 755
done
for b in "${optional[@]}"; do
  if [ -f "$src/$b" ]; then place "$src/$b" "$bin_dir/$b" 755; fi
done
dst=$conf_dir/$conflist
if [ -f "$dst" ] && ! cmp -s "$src/$conflist" "$dst"; then
  if [ "$replace" = 1 ]; then
    cp -p "$dst" "$dst.bak"
    place "$src/$conflist" "$dst" 644
    say "previous $dst kept as $dst.bak"
  else
    say "$dst kept: it differs from the release's (--force or REPLACE_CONFLIST=1 replaces it)"
  fi
else
  place "$src/$conflist" "$dst" 644
fi

# br_netfilter: at boot, and now (bridge mode's Service replies between
# pods of one node need conntrack on the bridge).
if [ -n "$modules_dir" ]; then
  mkdir -p "$modules_dir"
  printf '# azure-vnet bridge mode: conntrack for bridged traffic (Service replies between pods of a node)\nbr_netfilter\n' > "$work/modules.conf"
  place "$work/modules.conf" "$modules_dir/azure-vnet.conf" 644
fi
if [ -n "$cloud_dir" ] && [ -d "$cloud_dir" ]; then
  printf '# azure-vnet: the NIC'"'"'s secondary IP configurations are pod addresses; the\n# node must not put them on eth0.\ndatasource:\n  Azure:\n    apply_network_config_for_secondary_ips: false\n' > "$work/cloud.cfg"
  place "$work/cloud.cfg" "$cloud_dir/91-azure-vnet-secondary-ips.cfg" 644
fi
# The same drop-ins as vnetctl install (internal/install/netmanagers.go).
if [ -n "$networkd_dir" ] && [ -d "$networkd_dir" ]; then
  printf '# azure-vnet: the CNI bridge and the pods'"'"' host veths belong to the plugin.\n[Match]\nName=azure* azv*\n\n[Link]\nUnmanaged=yes\n' > "$work/networkd.network"
  place "$work/networkd.network" "$networkd_dir/05-azure-vnet-unmanaged.network" 644
  printf '# azure-vnet: keep the MAC the plugin gives its links (in bridge mode the\n# bridge takes the NIC'"'"'s, which the fabric requires).\n[Match]\nOriginalName=azure* azv*\n\n[Link]\nMACAddressPolicy=none\n' > "$work/networkd.link"
  place "$work/networkd.link" "$networkd_dir/05-azure-vnet.link" 644
fi
if [ -n "$nm_dir" ] && [ -d "$nm_dir" ]; then
  printf '# azure-vnet: the CNI bridge and the pods'"'"' host veths belong to the plugin.\n[keyfile]\nunmanaged-devices+=interface-name:azure*;interface-name:azv*\n' > "$work/nm.conf"
  place "$work/nm.conf" "$nm_dir/90-azure-vnet-unmanaged.conf" 644
fi
if [ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
  modprobe br_netfilter || say "warning: could not load br_netfilter (bridge mode loads it on its first pod)"
fi
# Forwarding, as vnetctl install does (internal/install: Forwarding).
if [ "$forward" != 0 ]; then
  echo 1 > /proc/sys/net/ipv4/ip_forward
  say "net.ipv4.ip_forward = 1"
  if [ -n "$sysctl_dir" ]; then
    mkdir -p "$sysctl_dir"
    printf '# azure-vnet: pods and NodePorts need the node to forward\nnet.ipv4.ip_forward = 1\n' > "$work/sysctl.conf"
    place "$work/sysctl.conf" "$sysctl_dir/90-azure-vnet.conf" 644
  fi
fi
# The node agent and its unit, when the release has them.
agent_changed=
if [ -f "$src/vnetd" ] && [ -f "$src/$unit" ]; then
  changed=0
  place "$src/vnetd" "$bin_dir/vnetd" 755
  sed "s|^ExecStart=/opt/cni/bin/vnetd |ExecStart=$bin_dir/vnetd |" "$src/$unit" > "$work/$unit"
  mkdir -p "$unit_dir"
  place "$work/$unit" "$unit_dir/$unit" 644
  agent_changed=$changed
fi

# Verify what was installed.
got=$("$bin_dir/azure-vnet" --version)
"$bin_dir/azure-vnet-ipam" --version >/dev/null
if [ -n "$version" ] && [ "${got##* }" != "$version" ]; then
  echo "install-cni-plugin.sh: installed azure-vnet says \"$got\", want version $version" >&2
  exit 1
fi
say "verified: $got"

if [ -n "$agent_changed" ]; then
  if [ "$unit_dir" = /etc/systemd/system ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl daemon-reload
    systemctl enable --now "$unit"
    if [ "$agent_changed" = 1 ]; then systemctl restart "$unit"; fi
    say "$unit enabled and running"
  else
    say "$unit not enabled: systemd does not run here or SYSTEMD_UNIT_DIR is not /etc/systemd/system"
  fi
fi
