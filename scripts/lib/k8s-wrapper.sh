# Helpers for building Kubernetes binaries from the Go module proxy
# (scripts/k8s-binaries.sh, scripts/e2e-binaries.sh). Sourced.
#
# k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces its staging
# modules with local paths), so a throwaway wrapper module requires it and
# replaces each staging module it requires at v0.0.0 with the published
# v0.<minor>.<patch>.

# k8s_wrapper_module MODULE VERSION writes such a go.mod into the current
# directory.
k8s_wrapper_module() {
  local module=$1 version=$2 staging gomod
  staging="v0.${version#v1.}" # v1.37.2 -> v0.37.2
  gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module $module"
    echo
    echo "go $(sed -n 's/^go //p' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    grep -E '^\s+k8s.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } >go.mod
}

# k8s_version_ldflags VERSION prints the -X flags that stamp a binary with
# its Kubernetes version (kubectl get nodes, e2e.test's log show it).
k8s_version_ldflags() {
  local version=$1 minor vpkg=k8s.io/component-base/version cpkg=k8s.io/client-go/pkg/version
  minor=${version#v1.}
  minor=${minor%%.*}
  echo "-X $vpkg.gitVersion=$version -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean" \
    "-X $cpkg.gitVersion=$version -X $cpkg.gitMajor=1 -X $cpkg.gitMinor=$minor"
}

# k8s_cached CACHE STAMP BIN...: whether every BIN is in CACHE, built with
# STAMP (the version and flags a rebuild is keyed by).
k8s_cached() {
  local cache=$1 stamp=$2 b
  shift 2
  for b in "$@"; do [ -x "$cache/$b" ] || return 1; done
  [ "$(cat "$cache/.stamp" 2>/dev/null)" = "$stamp" ]
}
