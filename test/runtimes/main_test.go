// Package runtimes drives the plugins through the runtimes people use —
// containerd's CRI plugin, podman, Docker (scripts/docker-run.sh) and
// cnitool — each run privately inside a VM of an emulated Azure VNet lab
// (lab/vnetlab), and checks what each runtime's pods get: an address from
// their VM NIC's pool, reachability across VMs, and a teardown that leaves
// no allocation, veth or nftables element behind.
//
// The suite needs root, Debian's containerd, runc, podman, docker.io and
// containernetworking-plugins, and cnitool (scripts/setup-runtimes.sh). It
// runs only when VNETCNI_RUNTIMES=1 (make e2e-runtimes); otherwise it says
// why it skipped.
package runtimes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/lab/runtimes"
	"github.com/vnetcni/vnetcni/lab/testbin"
	"github.com/vnetcni/vnetcni/lab/vnetlab"
)

// EnvRun enables the suite.
const EnvRun = "VNETCNI_RUNTIMES"

var (
	binDir     string       // the plugins, vnetctl, vnetcni-pause
	pauseBin   string       // the sandbox image's binary
	pauseTar   string       // the sandbox image tarball
	cnitool    string       // cnitool's path
	theLab     *vnetlab.Lab // the lab every test uses
	repoRoot   string
	summaryMu  sync.Mutex
	summaries  = map[string]string{}
	clientName = map[string]string{}
)

// required are the commands the suite runs.
var required = []string{"containerd", "ctr", "runc", "podman", "dockerd", "nsenter"}

func TestMain(m *testing.M) {
	if os.Getenv(EnvRun) != "1" {
		fmt.Printf("runtimes: skipped: set %s=1 (make e2e-runtimes) to drive the plugins through containerd, podman, Docker and cnitool\n", EnvRun)
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		fmt.Println("runtimes: skipped: needs root (network namespaces, daemons)")
		os.Exit(0)
	}
	code, err := setup(m)
	if err != nil {
		fmt.Println("runtimes: setup:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	var missing []string
	for _, c := range required {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return 1, fmt.Errorf("missing %s: run scripts/setup-runtimes.sh", strings.Join(missing, ", "))
	}
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return 1, fmt.Errorf("find module root: %w", err)
	}
	repoRoot = filepath.Dir(strings.TrimSpace(string(root)))
	dir, cleanup, err := testbin.Dir()
	if err != nil {
		return 1, err
	}
	defer cleanup()
	binDir = dir
	tmp, err := os.MkdirTemp("", "vnetcni-runtimes-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)
	pause := filepath.Join(binDir, runtimes.PauseBinaryName)
	if _, err := os.Stat(pause); err != nil {
		pause = filepath.Join(tmp, runtimes.PauseBinaryName)
		build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", pause, "./cmd/vnetcni-pause")
		build.Dir = repoRoot
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return 1, fmt.Errorf("build the pause binary: %v\n%s", err, out)
		}
	}
	pauseBin = pause
	pauseTar = filepath.Join(tmp, "pause-image.tar")
	if err := runtimes.WritePauseImage(pause, pauseTar); err != nil {
		return 1, err
	}
	if cnitool, err = findCNITool(); err != nil {
		return 1, err
	}

	name := "rt" + randHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := vnetlab.Up(ctx, vnetlab.UpOptions{Name: name, BinDir: binDir, Executable: filepath.Join(binDir, vnetlab.Binary)})
	if err != nil {
		_ = vnetlab.Down(name)
		return 1, fmt.Errorf("lab up: %w", err)
	}
	theLab = l
	code := m.Run()
	if err := vnetlab.Down(name); err != nil {
		fmt.Println("runtimes: lab down:", err)
		code = 1
	}
	if left := processesUnder(vnetlab.Dir(name)); len(left) > 0 {
		fmt.Println("runtimes: processes left after lab down:", left)
		code = 1
	}
	printSummary()
	return code, nil
}

// processesUnder lists processes whose command line names a path under
// dir (the runtimes' daemons and shims carry their config or socket).
func processesUnder(dir string) []string {
	var left []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || e.Name() == "self" {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, dir) || strings.Contains(cmd, strings.Replace(dir, "/var/run/", "/run/", 1)) {
			left = append(left, e.Name()+": "+cmd)
		}
	}
	return left
}

func findCNITool() (string, error) {
	cands := []string{filepath.Join(binDir, "cnitool"), filepath.Join(repoRoot, "bin", "cnitool")}
	if p, err := exec.LookPath("cnitool"); err == nil {
		cands = append(cands, p)
	}
	if gp, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		cands = append(cands, filepath.Join(strings.TrimSpace(string(gp)), "bin", "cnitool"))
	}
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && st.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", fmt.Errorf("cnitool not found in %v: run scripts/setup-runtimes.sh", cands)
}

// report records a client's one-line summary, printed after the run with
// the test's outcome.
func report(t *testing.T, client, line string) {
	t.Helper()
	summaryMu.Lock()
	defer summaryMu.Unlock()
	summaries[client] = line
	clientName[client] = t.Name()
}

// tracked registers a client test so it shows in the summary even if it
// fails before reporting.
func tracked(t *testing.T, client string) {
	t.Helper()
	summaryMu.Lock()
	if _, ok := summaries[client]; !ok {
		summaries[client] = ""
	}
	clientName[client] = t.Name()
	summaryMu.Unlock()
	t.Cleanup(func() {
		summaryMu.Lock()
		defer summaryMu.Unlock()
		verdict := "PASS"
		if t.Failed() {
			verdict = "FAIL"
		}
		summaries[client] = verdict + " " + summaries[client]
	})
}

func printSummary() {
	summaryMu.Lock()
	defer summaryMu.Unlock()
	var clients []string
	for c := range summaries {
		clients = append(clients, c)
	}
	sort.Strings(clients)
	for _, c := range clients {
		fmt.Printf("runtimes: %-10s %s\n", c, summaries[c])
	}
}

func randHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}
