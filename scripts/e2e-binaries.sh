#!/usr/bin/env bash
# Builds Kubernetes' conformance judge for make conformance — e2e.test (the
# k8s.io/kubernetes/test/e2e suite), the ginkgo CLI at the version that
# suite requires, and agnhost (the test images' workhorse) — from the Go
# module proxy, through the same wrapper module as scripts/k8s-binaries.sh
# (sharing its module and build caches), into a cache directory keyed by
# version, and reuses it. Prints the directory.
#
#   K8S_VERSION   (default v1.37.2)
#   K8S_CACHE     (default /var/cache/vnetcni/k8s)
set -euo pipefail
export PATH="/usr/local/go/bin:$PATH"
# shellcheck source=lib/k8s-wrapper.sh
. "$(dirname "$0")/lib/k8s-wrapper.sh"
K8S_VERSION=${K8S_VERSION:-v1.37.2}
cache=${K8S_CACHE:-/var/cache/vnetcni/k8s}/$K8S_VERSION/e2e
bins=(e2e.test ginkgo agnhost)
ldflags="-s -w $(k8s_version_ldflags "$K8S_VERSION")"
stamp="$K8S_VERSION $ldflags"

if k8s_cached "$cache" "$stamp" "${bins[@]}"; then echo "$cache"; exit 0; fi
mkdir -p "$cache"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "e2e-binaries: resolving modules for $K8S_VERSION" >&2
wrapper=${K8S_CACHE:-/var/cache/vnetcni/k8s}/$K8S_VERSION/.wrapper
if [ -f "$wrapper/go.mod" ]; then
  # k8s-binaries' module versions: its compiled packages are reused.
  cp "$wrapper/go.mod" "$wrapper/go.sum" .
else
  k8s_wrapper_module vnetcni.local/k8se2e "$K8S_VERSION"
  GOFLAGS=-mod=mod go get "k8s.io/kubernetes@$K8S_VERSION" >&2
fi
# The ginkgo CLI must match the library e2e.test links: Kubernetes' own.
ginkgo_version=$(GOFLAGS=-mod=mod go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)
GOFLAGS=-mod=mod go get "github.com/onsi/ginkgo/v2/ginkgo@$ginkgo_version" >&2
echo "e2e-binaries: building (cold: about 8 min on 2 cores after k8s-binaries)" >&2
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$cache/ginkgo" github.com/onsi/ginkgo/v2/ginkgo >&2
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$cache/agnhost" k8s.io/kubernetes/test/images/agnhost >&2
CGO_ENABLED=0 GOFLAGS=-mod=mod go test -c -trimpath -ldflags "$ldflags" -o "$cache/e2e.test" k8s.io/kubernetes/test/e2e >&2
echo "$stamp" >"$cache/.stamp"
k8s_cached "$cache" "$stamp" "${bins[@]}" || { echo "e2e-binaries: missing binaries in $cache" >&2; exit 1; }
echo "$cache"
