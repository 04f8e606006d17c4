package daemon

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/internal/netns"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestDaemonLifecycle starts a process in a throwaway namespace through
// nsenter, finds it at once (while nsenter may still be execing it),
// stops it, and never signals a PID that is not the daemon's.
func TestDaemonLifecycle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "vdm" + hex.EncodeToString(b)
	if err := netns.Create(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Delete(ns) })
	dir := t.TempDir()
	// A duration no other process uses: the marker.
	marker := "61." + strconv.Itoa(int(b[0])<<8|int(b[1]))
	d := Daemon{Name: "sleeper", PIDFile: filepath.Join(dir, "sleeper.pid"), Marker: marker}
	t.Cleanup(func() { _ = d.Stop(time.Second) })

	for i := 0; i < 20; i++ {
		pid, err := d.Start(netns.Path(ns), []string{"VNETCNI_TEST=1"}, filepath.Join(dir, "sleeper.log"), "sleep", marker)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := d.Running()
		if !ok || got != pid {
			t.Fatalf("round %d: Running() = %d, %t right after Start; want %d, true", i, got, ok, pid)
		}
		// Once exec'd, the daemon is sleep with its marker, in the
		// namespace.
		deadline := time.Now().Add(5 * time.Second)
		for {
			exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
			if filepath.Base(exe) == "sleep" && IsProcess(pid, marker) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d is still %q", pid, exe)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if a, b := inode(t, "/proc/"+strconv.Itoa(pid)+"/ns/net"), inode(t, netns.Path(ns)); a != b {
			t.Fatalf("daemon runs in netns inode %d, want %d", a, b)
		}
		if got := With(marker); len(got) != 1 || got[0] != pid {
			t.Fatalf("With(%q) = %v, want [%d]", marker, got, pid)
		}
		if err := d.Stop(2 * time.Second); err != nil {
			t.Fatal(err)
		}
		if _, ok := d.Running(); ok {
			t.Fatal("Running after Stop")
		}
		if _, err := os.Stat(d.PIDFile); !os.IsNotExist(err) {
			t.Fatalf("PID file left after Stop: %v", err)
		}
		if IsProcess(pid, marker) {
			t.Fatalf("pid %d still alive after Stop", pid)
		}
	}

	// A PID file naming another process (here: this test) is not the
	// daemon, and Stop leaves that process alone.
	if err := os.WriteFile(d.PIDFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Running(); ok {
		t.Fatal("Running() took the test process for the daemon")
	}
	if err := d.Stop(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := StopPID(os.Getpid(), marker, time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestZombie(t *testing.T) {
	for stat, want := range map[string]bool{
		"12 (sleep) S 1 12 12 0":     false,
		"12 (sleep) Z 1 12 12 0":     true,
		"12 (a) Z (b) S 1 12 12 0":   false, // the state follows the last ')'
		"12 (odd) name) Z 1 12 12 0": true,
		"":                           false,
		"12 (truncated)":             false,
	} {
		if got := Zombie([]byte(stat)); got != want {
			t.Errorf("Zombie(%q) = %t, want %t", stat, got, want)
		}
	}
}
