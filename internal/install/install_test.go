package install

import (
	"archive/tar"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vnetcni/vnetcni/conf"
	"github.com/vnetcni/vnetcni/deploy/systemd"
)

// fakeRelease writes stand-in binaries that answer --version like the
// plugins do, plus the conflist, into dir.
func fakeRelease(t *testing.T, dir, version string) {
	t.Helper()
	for _, b := range Binaries {
		script := "#!/bin/sh\necho \"CNI plugin " + b + " " + version + "\"\n"
		if err := os.WriteFile(filepath.Join(dir, b), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, conf.FileName), conf.Conflist, 0o644); err != nil {
		t.Fatal(err)
	}
}

func outcomes(acts []Action, root string) map[string]Outcome {
	m := map[string]Outcome{}
	for _, a := range acts {
		rel, _ := filepath.Rel(root, a.Path)
		m[rel] = a.Outcome
	}
	return m
}

func TestInstall(t *testing.T) {
	src, root := t.TempDir(), t.TempDir()
	fakeRelease(t, src, "v1.0.0")
	o := Options{SourceDir: src, BinDir: filepath.Join(root, "bin"), ConfDir: filepath.Join(root, "net.d"),
		ConflistName: conf.FileName, Conflist: conf.Conflist}
	all := func(bin, cl Outcome) map[string]Outcome {
		m := map[string]Outcome{"net.d/" + conf.FileName: cl}
		for _, b := range Binaries {
			m["bin/"+b] = bin
		}
		return m
	}
	steps := []struct {
		name    string
		prepare func()
		replace bool
		want    map[string]Outcome
	}{
		{name: "fresh node", want: all(Installed, Installed)},
		{name: "again: nothing changes", want: all(Unchanged, Unchanged)},
		{name: "operator edited the conflist", prepare: func() {
			os.WriteFile(filepath.Join(o.ConfDir, conf.FileName), []byte(`{"edited":true}`), 0o644)
		}, want: all(Unchanged, Kept)},
		{name: "new release", prepare: func() { fakeRelease(t, src, "v1.1.0") }, want: all(Updated, Kept)},
		{name: "forced", replace: true, want: all(Unchanged, Replaced)},
	}
	for _, s := range steps {
		if s.prepare != nil {
			s.prepare()
		}
		o.ReplaceConflist = s.replace
		acts, err := Install(o)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if d := cmp.Diff(s.want, outcomes(acts, root)); d != "" {
			t.Errorf("%s: outcomes (-want +got):\n%s", s.name, d)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(o.ConfDir, conf.FileName+".bak")); string(b) != `{"edited":true}` {
		t.Errorf("the replaced conflist's backup holds %q, want the operator's version", b)
	}
	if v, err := Verify(o.BinDir); err != nil || v != "CNI plugin azure-vnet v1.1.0" {
		t.Errorf("Verify = %q, %v; want the new version", v, err)
	}
}

func TestInstallRefusesIncompleteSource(t *testing.T) {
	src, root := t.TempDir(), t.TempDir()
	fakeRelease(t, src, "v1")
	os.Remove(filepath.Join(src, "portmap"))
	_, err := Install(Options{SourceDir: src, BinDir: filepath.Join(root, "bin"), ConfDir: filepath.Join(root, "net.d"),
		ConflistName: conf.FileName, Conflist: conf.Conflist})
	if err == nil || !strings.Contains(err.Error(), "portmap") {
		t.Fatalf("Install from a source without portmap: %v, want an error naming portmap", err)
	}
	if _, err := os.Stat(filepath.Join(root, "bin")); err == nil {
		t.Errorf("Install created the bin directory before checking its source")
	}
}

// tarball packs a directory as the release tarball.
func tarball(t *testing.T, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		st, _ := e.Info()
		if err := tw.WriteHeader(&tar.Header{Name: "./" + e.Name(), Mode: int64(st.Mode().Perm()), Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	tw.Close()
	gz.Close()
}

// TestInstallScript runs scripts/install-cni-plugin.sh against temporary
// CNI directories, never the machine's.
func TestInstallScript(t *testing.T) {
	_, self, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(self), "..", "..", "scripts", "install-cni-plugin.sh")
	src, root := t.TempDir(), t.TempDir()
	fakeRelease(t, src, "v2.0.0")
	if err := os.WriteFile(filepath.Join(src, Agent), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, systemd.UnitName), systemd.Unit, 0o644); err != nil {
		t.Fatal(err)
	}
	tgz := filepath.Join(t.TempDir(), "azure-vnet-cni-linux-amd64-v2.0.0.tgz")
	tarball(t, src, tgz)
	bin, confDir, unitDir := filepath.Join(root, "opt-cni-bin"), filepath.Join(root, "etc-cni-net.d"), filepath.Join(root, "etc-systemd-system")
	cloudDir := filepath.Join(root, "cloud.cfg.d")
	networkdDir, nmDir := filepath.Join(root, "systemd-network"), filepath.Join(root, "NetworkManager-conf.d")
	for _, d := range []string{cloudDir, networkdDir, nmDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sysctlDir := filepath.Join(root, "etc-sysctl.d")
	// Forwarding is turned on in a throwaway network namespace
	// (unshare --net), never the machine's; without root, not at all.
	forwarding := os.Geteuid() == 0
	run := func(env []string, args ...string) (string, error) {
		argv := append([]string{"bash", script}, args...)
		fwd := "ENABLE_IP_FORWARD=0"
		if forwarding {
			argv = append([]string{"unshare", "--net", "--"}, argv...)
			fwd = "ENABLE_IP_FORWARD=1"
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), append([]string{"CNI_BIN_DIR=" + bin, "CNI_CONF_DIR=" + confDir, "REPLACE_CONFLIST=", fwd, "SYSCTL_DIR=" + sysctlDir,
			"MODULES_LOAD_DIR=" + filepath.Join(root, "modules-load.d"), "CLOUD_INIT_DIR=" + cloudDir, "SYSTEMD_UNIT_DIR=" + unitDir,
			"NETWORKD_DIR=" + networkdDir, "NETWORKMANAGER_DIR=" + nmDir}, env...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	cases := []struct {
		name    string
		env     []string
		args    []string
		prepare func()
		wantErr bool
		want    []string // substrings of the output
	}{
		{name: "fresh", args: []string{"v2.0.0", tgz}, want: []string{"azure-vnet installed", conf.FileName + " installed", "azure-vnet.conf installed", "91-azure-vnet-secondary-ips.cfg installed",
			NetworkdFileName + " installed", NetworkdLinkFileName + " installed", NetworkManagerFileName + " installed",
			"verified: CNI plugin azure-vnet v2.0.0", "vnetd installed", "vnetd.service installed", "vnetd.service not enabled"}},
		{name: "idempotent", args: []string{"v2.0.0", tgz}, want: []string{"azure-vnet unchanged", conf.FileName + " unchanged", "vnetd unchanged", "vnetd.service unchanged"}},
		{name: "edited conflist kept", args: []string{"v2.0.0", tgz}, prepare: func() {
			os.WriteFile(filepath.Join(confDir, conf.FileName), []byte("{}"), 0o644)
		}, want: []string{"kept: it differs"}},
		{name: "REPLACE_CONFLIST=1", env: []string{"REPLACE_CONFLIST=1"}, args: []string{"v2.0.0", tgz}, want: []string{conf.FileName + " updated", ".bak"}},
		{name: "wrong version", args: []string{"v9.9.9", tgz}, wantErr: true, want: []string{"want version v9.9.9; nothing installed"}},
		{name: "no release", args: []string{"v7.7.7"}, wantErr: true, want: []string{"no release found for v7.7.7"}},
	}
	for _, c := range cases {
		if c.prepare != nil {
			c.prepare()
		}
		out, err := run(c.env, c.args...)
		if (err != nil) != c.wantErr {
			t.Fatalf("%s: error %v, want error %v; output:\n%s", c.name, err, c.wantErr, out)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", c.name, w, out)
			}
		}
	}
	if b, _ := os.ReadFile(filepath.Join(confDir, conf.FileName)); string(b) != string(conf.Conflist) {
		t.Errorf("after REPLACE_CONFLIST=1 the conflist is %q, want the release's", b)
	}
	if forwarding {
		if b, err := os.ReadFile(filepath.Join(sysctlDir, SysctlFile)); err != nil || !strings.Contains(string(b), "net.ipv4.ip_forward = 1") {
			t.Errorf("%s holds %q (%v), want net.ipv4.ip_forward = 1", SysctlFile, b, err)
		}
	}
	// The script's drop-ins are vnetctl install's, byte for byte.
	for path, want := range (Options{NetworkdDir: networkdDir, NetworkManagerDir: nmDir}).managerFiles() {
		if b, err := os.ReadFile(path); err != nil || string(b) != want {
			t.Errorf("the script wrote %s = %q (%v), want vnetctl install's %q", path, b, err, want)
		}
	}
	unit, err := os.ReadFile(filepath.Join(unitDir, systemd.UnitName))
	if want := "\nExecStart=" + filepath.Join(bin, Agent) + " --state-dir="; err != nil || !strings.Contains(string(unit), want) {
		t.Errorf("installed unit (%v):\n%s\nwant %q", err, unit, want)
	}
}

// TestUninstall removes what Install wrote but the reference plugins, and
// is idempotent.
func TestUninstall(t *testing.T) {
	src, root := t.TempDir(), t.TempDir()
	fakeRelease(t, src, "v1.0.0")
	o := Options{SourceDir: src, BinDir: filepath.Join(root, "bin"), ConfDir: filepath.Join(root, "net.d"),
		ConflistName: conf.FileName, Conflist: conf.Conflist, ModulesLoadDir: filepath.Join(root, "modules-load.d")}
	if _, err := Install(o); err != nil {
		t.Fatal(err)
	}
	acts, err := Uninstall(o)
	if err != nil || len(acts) != 5 {
		t.Fatalf("Uninstall = %v, %v; want the three plugin binaries, the conflist and the modules-load file removed", acts, err)
	}
	for _, b := range []string{"portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil {
			t.Errorf("Uninstall removed %s: %v", b, err)
		}
	}
	if acts, err := Uninstall(o); err != nil || len(acts) != 0 {
		t.Errorf("Uninstall again = %v, %v; want nothing to do", acts, err)
	}
}

// TestNetworkManagers: the drop-ins that keep systemd-networkd and
// NetworkManager off the bridge and the host veths go where each manager's
// directory exists, only there, and Uninstall removes them.
func TestNetworkManagers(t *testing.T) {
	src, root := t.TempDir(), t.TempDir()
	fakeRelease(t, src, "v1.0.0")
	networkd, nm := filepath.Join(root, "systemd", "network"), filepath.Join(root, "NetworkManager", "conf.d")
	if err := os.MkdirAll(networkd, 0o755); err != nil {
		t.Fatal(err)
	}
	o := Options{SourceDir: src, BinDir: filepath.Join(root, "bin"), ConfDir: filepath.Join(root, "net.d"),
		ConflistName: conf.FileName, Conflist: conf.Conflist, NetworkdDir: networkd, NetworkManagerDir: nm}
	acts, err := Install(o)
	if err != nil {
		t.Fatal(err)
	}
	got := outcomes(acts, root)
	for _, f := range []string{"systemd/network/" + NetworkdFileName, "systemd/network/" + NetworkdLinkFileName} {
		if got[f] != Installed {
			t.Errorf("Install: %s %q, want %q (all: %v)", f, got[f], Installed, got)
		}
	}
	if _, ok := got["NetworkManager/conf.d/"+NetworkManagerFileName]; ok {
		t.Errorf("Install wrote NetworkManager's drop-in without NetworkManager's directory: %v", got)
	}
	b, _ := os.ReadFile(filepath.Join(networkd, NetworkdFileName))
	for _, want := range []string{"[Match]\nName=azure* azv*\n", "[Link]\nUnmanaged=yes\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s:\n%s\nwant %q", NetworkdFileName, b, want)
		}
	}
	b, _ = os.ReadFile(filepath.Join(networkd, NetworkdLinkFileName))
	if !strings.Contains(string(b), "OriginalName=azure* azv*\n") || !strings.Contains(string(b), "MACAddressPolicy=none\n") {
		t.Errorf("%s:\n%s\nwant the links matched and their MAC left alone", NetworkdLinkFileName, b)
	}

	// NetworkManager installed later: the next install adds its drop-in.
	if err := os.MkdirAll(nm, 0o755); err != nil {
		t.Fatal(err)
	}
	acts, err = Install(o)
	if err != nil {
		t.Fatal(err)
	}
	got = outcomes(acts, root)
	if f := "NetworkManager/conf.d/" + NetworkManagerFileName; got[f] != Installed || got["systemd/network/"+NetworkdFileName] != Unchanged {
		t.Errorf("second Install: %v, want NetworkManager's drop-in installed and networkd's unchanged", got)
	}
	b, _ = os.ReadFile(filepath.Join(nm, NetworkManagerFileName))
	if !strings.Contains(string(b), "[keyfile]\nunmanaged-devices+=interface-name:azure*;interface-name:azv*\n") {
		t.Errorf("%s:\n%s\nwant both globs appended to keyfile.unmanaged-devices", NetworkManagerFileName, b)
	}

	acts, err = Uninstall(o)
	if err != nil {
		t.Fatal(err)
	}
	got = outcomes(acts, root)
	for _, f := range []string{"systemd/network/" + NetworkdFileName, "systemd/network/" + NetworkdLinkFileName, "NetworkManager/conf.d/" + NetworkManagerFileName} {
		if got[f] != Removed {
			t.Errorf("Uninstall: %s %q, want %q", f, got[f], Removed)
		}
		if _, err := os.Stat(filepath.Join(root, f)); !os.IsNotExist(err) {
			t.Errorf("after Uninstall %s is still there (%v)", f, err)
		}
	}
}

// TestInstallAgent: with vnetd in the source, Install places it beside the
// plugins and its unit (ExecStart pointing at it) in the unit directory,
// idempotently; without vnetd, no unit is written.
func TestInstallAgent(t *testing.T) {
	src, root := t.TempDir(), t.TempDir()
	fakeRelease(t, src, "v1.0.0")
	unit := []byte("[Service]\nExecStart=/opt/cni/bin/vnetd --state-dir=/var/run/azure-vnet\n")
	o := Options{SourceDir: src, BinDir: filepath.Join(root, "bin"), ConfDir: filepath.Join(root, "net.d"),
		ConflistName: conf.FileName, Conflist: conf.Conflist,
		UnitDir: filepath.Join(root, "systemd"), UnitName: "vnetd.service", Unit: unit, UnitExec: "/opt/cni/bin/vnetd"}
	acts, err := Install(o)
	if err != nil {
		t.Fatal(err)
	}
	if got := outcomes(acts, root); got["bin/vnetd"] != "" || got["systemd/vnetd.service"] != "" {
		t.Errorf("without vnetd in the source: outcomes %v, want no agent or unit", got)
	}
	if _, err := os.Stat(o.UnitDir); err == nil {
		t.Errorf("without vnetd in the source, the unit directory was created")
	}

	if err := os.WriteFile(filepath.Join(src, Agent), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, want := range []Outcome{Installed, Unchanged} {
		acts, err := Install(o)
		if err != nil {
			t.Fatal(err)
		}
		got := outcomes(acts, root)
		if got["bin/vnetd"] != want || got["systemd/vnetd.service"] != want {
			t.Errorf("agent and unit: %q, %q; want %q", got["bin/vnetd"], got["systemd/vnetd.service"], want)
		}
	}
	b, err := os.ReadFile(filepath.Join(o.UnitDir, "vnetd.service"))
	wantUnit := "[Service]\nExecStart=" + filepath.Join(o.BinDir, "vnetd") + " --state-dir=/var/run/azure-vnet\n"
	if err != nil || string(b) != wantUnit {
		t.Errorf("installed unit %q (%v), want %q", b, err, wantUnit)
	}
}
