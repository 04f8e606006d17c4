// Package testbin provides the built binaries — the plugins, vnetctl, and
// the reference plugins they chain — to tests that run them for real.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// EnvDir names a directory with prebuilt binaries (make test sets it to bin/).
const EnvDir = "VNETCNI_BIN_DIR"

// Packages are what Build builds.
var Packages = []string{
	"./cmd/azure-vnet", "./cmd/azure-vnet-standalone", "./cmd/azure-vnet-ipam", "./cmd/vnetd", "./cmd/vnetctl", "./cmd/vnetctl-policy", "./lab/cmd/vnetctl-lab",
	"github.com/containernetworking/plugins/plugins/meta/portmap",
	"github.com/containernetworking/plugins/plugins/main/loopback",
}

// staticPackages are built with CGO_ENABLED=0: they go into images.
var staticPackages = []string{"./lab/cmd/vnetcni-pause", "./lab/cmd/vnetcni-echo"}

// Dir returns $VNETCNI_BIN_DIR, or builds the binaries into a temporary
// directory that cleanup removes.
func Dir() (dir string, cleanup func(), err error) {
	if d := os.Getenv(EnvDir); d != "" {
		return d, func() {}, nil
	}
	d, err := os.MkdirTemp("", "vnetcni-bin-")
	if err != nil {
		return "", nil, err
	}
	if err := Build(d); err != nil {
		os.RemoveAll(d)
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// Build builds Packages into dir.
func Build(dir string) error {
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("find module root: %w", err)
	}
	cmd := exec.Command("go", append([]string{"build", "-o", dir + "/"}, Packages...)...)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build binaries: %v\n%s", err, out)
	}
	cmd = exec.Command("go", append([]string{"build", "-o", dir + "/"}, staticPackages...)...)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build image binaries: %v\n%s", err, out)
	}
	return nil
}

// Suite is a test package that runs the built binaries as root.
type Suite struct {
	Name string // in skip messages
	// Gate names an environment variable that must be "1" for the suite
	// to run (long suites stay out of plain go test); empty runs always.
	Gate string
	Hint string // how the gated suite is meant to be run, e.g. "make reliability"
}

// Main is a TestMain for a Suite: it skips with a message when not root or
// not enabled, provides the binaries in *dir, runs the tests and exits.
func Main(m *testing.M, s Suite, dir *string) {
	if s.Gate != "" && os.Getenv(s.Gate) != "1" {
		fmt.Printf("%s: skipped: set %s=1 (%s) to run\n", s.Name, s.Gate, s.Hint)
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		fmt.Printf("%s: skipped: these tests need root for network namespaces\n", s.Name)
		os.Exit(0)
	}
	d, cleanup, err := Dir()
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	*dir = d
	code := m.Run()
	cleanup()
	os.Exit(code)
}
