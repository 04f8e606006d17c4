// Package buildinfo carries the version stamped into the binaries at link
// time (-ldflags "-X github.com/vnetcni/vnetcni/internal/buildinfo.Version=v1.2.3").
package buildinfo

import (
	"runtime/debug"
)

// Version is the release version, set by the linker.
var Version = ""

// String returns the version, falling back to the module's build info.
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "v0.0.0-dev"
}
