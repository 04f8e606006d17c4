package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFindLab: vnetctl finds the lab binary on PATH when it is not beside
// it, and says how to get it when it is nowhere.
func TestFindLab(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", dir)
	if _, err := findLab(); err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Errorf("findLab with no lab binary: %v, want a 'not installed' error", err)
	}
	lab := filepath.Join(dir, labBinary)
	if err := os.WriteFile(lab, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := findLab()
	if err != nil || got != lab {
		t.Errorf("findLab = %q, %v; want %q", got, err, lab)
	}
}
