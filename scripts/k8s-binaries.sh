#!/usr/bin/env bash
# Builds the Kubernetes binaries the lab's cluster runs — kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, etcd
# and CoreDNS — from the Go module proxy, into a cache directory keyed by
# version, and reuses it. Prints the directory.
#
# k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces its staging
# modules with local paths), so a throwaway wrapper module requires it and
# replaces each staging module it requires at v0.0.0 with the published
# v0.<minor>.<patch>. etcd is built from go.etcd.io/etcd/server/v3 in the
# same wrapper; CoreDNS installs directly. No binary is committed.
#
#   K8S_VERSION   (default v1.37.2)
#   COREDNS_VERSION (default v1.14.7)
#   K8S_CACHE     (default /var/cache/vnetcni/k8s)
set -euo pipefail
export PATH="/usr/local/go/bin:$PATH"
# shellcheck source=lib/k8s-wrapper.sh
. "$(dirname "$0")/lib/k8s-wrapper.sh"
K8S_VERSION=${K8S_VERSION:-v1.37.2}
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
cache=${K8S_CACHE:-/var/cache/vnetcni/k8s}/$K8S_VERSION
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd coredns)

# The binaries carry their version (kubectl get nodes shows it).
ldflags="-s -w $(k8s_version_ldflags "$K8S_VERSION")"
stamp="$K8S_VERSION coredns=$COREDNS_VERSION $ldflags"

if k8s_cached "$cache" "$stamp" "${bins[@]}"; then echo "$cache"; exit 0; fi
mkdir -p "$cache"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
k8s_wrapper_module vnetcni.local/k8sbuild "$K8S_VERSION"
mkdir -p etcd
cat > etcd/main.go <<'GO'
// Command etcd starts an etcd server (go.etcd.io/etcd/server/v3).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
echo "k8s-binaries: resolving modules for $K8S_VERSION" >&2
GOFLAGS=-mod=mod go get "k8s.io/kubernetes@$K8S_VERSION" go.etcd.io/etcd/server/v3 >&2
GOFLAGS=-mod=mod go mod tidy >&2 || true
echo "k8s-binaries: building (cold: 10-25 min on 2 cores)" >&2
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$cache/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl >&2
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$cache/etcd" ./etcd >&2
GOBIN="$cache" CGO_ENABLED=0 go install "github.com/coredns/coredns@$COREDNS_VERSION" >&2
# The resolved wrapper module, for scripts/e2e-binaries.sh: the same module
# versions make the same packages, so it builds on this build's cache.
mkdir -p "$cache/.wrapper" && cp go.mod go.sum "$cache/.wrapper/"
echo "$stamp" > "$cache/.stamp"
k8s_cached "$cache" "$stamp" "${bins[@]}" || { echo "k8s-binaries: missing binaries in $cache" >&2; exit 1; }
echo "$cache"
