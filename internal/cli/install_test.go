package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnetcni/vnetcni/conf"
	"github.com/vnetcni/vnetcni/deploy/systemd"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/install"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/netns/netnstest"
)

// TestInstallCommand runs `vnetctl install` twice against temporary CNI
// directories, systemd unit directory and a throwaway network namespace:
// the second run changes nothing, the namespace forwards, and the agent's
// unit is placed but not enabled (the unit directory is not systemd's).
func TestInstallCommand(t *testing.T) {
	ns := netnstest.New(t, "vci")
	src, root := t.TempDir(), t.TempDir()
	for _, b := range append(install.Binaries, install.Agent) {
		script := "#!/bin/sh\necho \"CNI plugin " + b + " v3.0.0\"\n"
		if err := os.WriteFile(filepath.Join(src, b), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin, confDir, sysctlDir := filepath.Join(root, "bin"), filepath.Join(root, "net.d"), filepath.Join(root, "sysctl.d")
	unitDir := filepath.Join(root, "systemd")
	cloudDir, networkdDir := filepath.Join(root, "cloud.cfg.d"), filepath.Join(root, "systemd-network")
	for _, d := range []string{cloudDir, networkdDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run := func() string {
		var out, errOut bytes.Buffer
		cmd := newRoot(&out, &errOut)
		cmd.SetArgs([]string{"install", "--bin-dir", src, "--cni-bin-dir", bin, "--cni-conf-dir", confDir, "--sysctl-dir", sysctlDir,
			"--modules-load-dir", filepath.Join(root, "modules-load.d"), "--cloud-init-dir", cloudDir, "--unit-dir", unitDir,
			"--networkd-dir", networkdDir, "--networkmanager-dir", filepath.Join(root, "no-networkmanager")})
		if err := netns.Do(ns, func() error { return cmd.ExecuteContext(context.Background()) }); err != nil {
			t.Fatalf("vnetctl install: %v\n%s%s", err, out.String(), errOut.String())
		}
		return out.String()
	}
	first := run()
	if !strings.Contains(first, "installed") || !strings.Contains(first, "verified: CNI plugin azure-vnet v3.0.0") {
		t.Errorf("first install printed:\n%s\nwant files installed and the version verified", first)
	}
	if b, err := os.ReadFile(filepath.Join(confDir, conf.FileName)); err != nil || !bytes.Equal(b, conf.Conflist) {
		t.Errorf("installed conflist %q (%v), want the embedded sample", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "modules-load.d", install.ModulesLoadFileName)); err != nil || !strings.Contains(string(b), "\nbr_netfilter\n") {
		t.Errorf("modules-load.d file %q (%v), want it to name br_netfilter", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(cloudDir, install.CloudInitFileName)); err != nil || !strings.Contains(string(b), "apply_network_config_for_secondary_ips: false") {
		t.Errorf("cloud-init drop-in %q (%v), want it to turn off secondary IPs on eth0", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(networkdDir, install.NetworkdFileName)); err != nil || !strings.Contains(string(b), "Unmanaged=yes") {
		t.Errorf("networkd drop-in %q (%v), want the plugin's links unmanaged", b, err)
	}
	if _, err := os.Stat(filepath.Join(root, "no-networkmanager")); !os.IsNotExist(err) {
		t.Errorf("install created NetworkManager's directory where NetworkManager is not installed (%v)", err)
	}
	if !strings.Contains(first, "vnetd.service not enabled") {
		t.Errorf("first install printed:\n%s\nwant the unit reported as not enabled", first)
	}
	unit, err := os.ReadFile(filepath.Join(unitDir, systemd.UnitName))
	if want := "ExecStart=" + filepath.Join(bin, install.Agent) + " "; err != nil || !strings.Contains(string(unit), want) {
		t.Errorf("installed unit (%v):\n%s\nwant %q", err, unit, want)
	}
	if st, err := os.Stat(filepath.Join(bin, install.Agent)); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("installed vnetd: %v, %v; want mode 0755", st, err)
	}
	if second := run(); strings.Contains(second, "installed") || strings.Contains(second, "updated") {
		t.Errorf("second install printed:\n%s\nwant every file unchanged", second)
	}
	var fwd string
	if err := netns.Do(ns, func() (err error) { fwd, err = datapath.ReadSysctl(datapath.ForwardingSysctl); return err }); err != nil || fwd != "1" {
		t.Errorf("after install the namespace has ip_forward %q (%v), want 1", fwd, err)
	}
	if b, err := os.ReadFile(filepath.Join(sysctlDir, install.SysctlFile)); err != nil || !strings.Contains(string(b), "net.ipv4.ip_forward = 1") {
		t.Errorf("%s holds %q (%v), want net.ipv4.ip_forward = 1", install.SysctlFile, b, err)
	}
}
