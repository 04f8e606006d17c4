package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckBridgeNetfilter(t *testing.T) {
	dir := t.TempDir()
	if err := CheckBridgeNetfilter(dir); err == nil || !strings.Contains(err.Error(), "br_netfilter") {
		t.Errorf("without the sysctl: %v, want an error naming br_netfilter", err)
	}
	path := filepath.Join(dir, BridgeNetfilterSysctl)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		value string
		ok    bool
	}{{"1\n", true}, {"0\n", false}} {
		if err := os.WriteFile(path, []byte(tc.value), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := CheckBridgeNetfilter(dir); (err == nil) != tc.ok {
			t.Errorf("sysctl %q: %v, want ok %v", tc.value, err, tc.ok)
		}
	}
}
