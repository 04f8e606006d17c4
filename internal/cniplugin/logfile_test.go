package cniplugin

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestOpenLogFileRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "azure-vnet.log")
	write := func(line string) {
		t.Helper()
		f, err := openLogFile(path, 100, 2)
		if err != nil {
			t.Fatalf("open log: %v", err)
		}
		fmt.Fprintln(f, line)
		f.Close()
	}
	read := func(name string) string {
		b, err := os.ReadFile(name)
		if err != nil {
			return "(none)"
		}
		return string(b)
	}
	big := strings.Repeat("x", 120)
	write("first " + big) // 127 bytes: the next open rotates
	write("second")
	if got, want := read(path), "second\n"; got != want {
		t.Errorf("log after rotation = %q, want %q", got, want)
	}
	if got := read(path + ".1"); !strings.HasPrefix(got, "first ") {
		t.Errorf("log.1 = %q, want the first line", got)
	}
	write("third " + big) // appended to "second": 134 bytes
	write("fourth " + big)
	write("fifth")
	for name, want := range map[string]string{path: "fifth", path + ".1": "fourth ", path + ".2": "second\nthird "} {
		if got := read(name); !strings.HasPrefix(got, want) {
			t.Errorf("%s = %.20q…, want it to start %q", filepath.Base(name), got, want)
		}
	}
	if got := read(path + ".3"); got != "(none)" {
		t.Errorf("log.3 exists (%d bytes): want only 2 backups", len(got))
	}
}

// TestOpenLogFileRotatesOnce: many processes (here: opens, each with its
// own flock) finding the log full at once rotate it once, and no line is
// lost.
func TestOpenLogFileRotatesOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "azure-vnet.log")
	if err := os.WriteFile(path, bytes.Repeat([]byte("old\n"), 100), 0o640); err != nil {
		t.Fatal(err)
	}
	const writers = 20
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := openLogFile(path, 400, 2)
			if err != nil {
				t.Errorf("open log: %v", err)
				return
			}
			fmt.Fprintf(f, "writer %d\n", i)
			f.Close()
		}()
	}
	wg.Wait()
	all := ""
	for _, name := range []string{path, path + ".1", path + ".2"} {
		b, _ := os.ReadFile(name)
		all += string(b)
	}
	if n := strings.Count(all, "old\n"); n != 100 {
		t.Errorf("%d of the 100 old lines survive the rotation (an extra rotation lost or truncated some)", n)
	}
	for i := 0; i < writers; i++ {
		if !strings.Contains(all, fmt.Sprintf("writer %d\n", i)) {
			t.Errorf("line of writer %d lost", i)
		}
	}
	if _, err := os.Stat(path + ".2"); err == nil {
		t.Errorf("log.2 exists: the full log was rotated more than once")
	}
}

// TestRotateAfterAnotherProcess: two processes opened the full log; the
// second to get the lock finds it rotated and must not rotate again (which
// would push the first's fresh log and the backups down one more).
func TestRotateAfterAnotherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "azure-vnet.log")
	if err := os.WriteFile(path, []byte("old\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	var fs []*os.File
	for i := 0; i < 2; i++ {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fs = append(fs, f)
	}
	if err := rotate(fs[0], path, 2); err != nil {
		t.Fatalf("first rotation: %v", err)
	}
	if err := os.WriteFile(path, []byte("new\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := rotate(fs[1], path, 2); err != nil {
		t.Fatalf("second rotation: %v", err)
	}
	for name, want := range map[string]string{path: "new\n", path + ".1": "old\n"} {
		if b, err := os.ReadFile(name); string(b) != want {
			t.Errorf("%s = %q (%v), want %q", filepath.Base(name), b, err, want)
		}
	}
}
