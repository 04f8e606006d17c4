#!/usr/bin/env bash
# Builds the Debian root filesystem the Kubernetes e2e test images are made
# of in the lab (make conformance), as one uncompressed layer tarball, and
# reuses it. Prints its path.
#
# Upstream builds agnhost on Alpine with bind-tools, curl, netcat-openbsd,
# iproute2, iperf, bash, socat; nginx and glibc-dns-testing on Debian; busybox
# is busybox. Here one Debian bookworm rootfs (debootstrap, from the Debian
# mirror apt already uses) carries the same tools and nginx; the busybox
# image takes only its static busybox (see lab/k8slab/e2eimages.go).
#
#   E2E_CACHE      (default /var/cache/vnetcni/e2e)
#   DEBIAN_MIRROR  (default http://deb.debian.org/debian)
set -euo pipefail
# shellcheck source=lib/apt.sh
. "$(dirname "$0")/lib/apt.sh"
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${E2E_CACHE:-/var/cache/vnetcni/e2e}
pkgs=bash,curl,ca-certificates,netcat-openbsd,bind9-dnsutils,iproute2,iputils-ping,socat,procps,iperf,util-linux,nginx-light,busybox-static
out=$cache/rootfs-$suite.tar
stamp="$suite $mirror $pkgs"

if [ -f "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$out"
  exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "e2e-rootfs: installing debootstrap" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends debootstrap
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/.rootfs-XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "e2e-rootfs: debootstrap $suite ($pkgs); cold: about 10 minutes" >&2
debootstrap --variant=minbase --include="$pkgs" "$suite" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -30 "$work/debootstrap.log" >&2
  exit 1
}
# What a container needs no copy of: caches, docs, the apt lists.
rm -rf "$work/root/var/cache/apt/"* "$work/root/var/lib/apt/lists/"* "$work/root/usr/share/doc" \
  "$work/root/usr/share/man" "$work/root/usr/share/info" "$work/root/usr/share/locale"
# nginx logs to the container's stdout and stderr, as the upstream image does.
ln -sf /dev/stdout "$work/root/var/log/nginx/access.log"
ln -sf /dev/stderr "$work/root/var/log/nginx/error.log"
tar --numeric-owner --sort=name --mtime=@1577836800 -C "$work/root" -cf "$work/rootfs.tar" .
mv -f "$work/rootfs.tar" "$out"
echo "$stamp" >"$out.stamp"
echo "$out"
