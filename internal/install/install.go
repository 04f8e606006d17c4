// Package install puts the CNI plugins and the network configuration on a
// node: the binaries into the CNI bin directory (/opt/cni/bin) and the
// conflist into the CNI configuration directory (/etc/cni/net.d). It is
// idempotent — identical files are left alone — replaces binaries
// atomically (a runtime may be executing them), and keeps an existing
// conflist that differs unless told to replace it: an operator's edits win.
// scripts/install-cni-plugin.sh is its shell twin for release tarballs.
package install

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/thinplugin"
)

// Default directories of a node, as kubelet and containerd expect them,
// and systemd's directory for the agent's unit.
const (
	DefaultBinDir  = "/opt/cni/bin"
	DefaultConfDir = "/etc/cni/net.d"
	DefaultUnitDir = "/etc/systemd/system"
)

// Bridge mode needs br_netfilter (see datapath.BridgeNetfilterModule);
// where it is a module, systemd-modules-load loads it at boot from this
// file. The plugin also loads it when it sets up a bridge.
const (
	DefaultModulesLoadDir = "/etc/modules-load.d"
	ModulesLoadFileName   = "azure-vnet.conf"
)

// Azure's cloud-init datasource puts every secondary IP of the NIC on eth0
// (apply_network_config_for_secondary_ips, on by default in many images);
// they are the pods' addresses. This drop-in turns that off from the next
// boot on; meanwhile ADD takes an address off eth0 when a pod claims it.
const (
	DefaultCloudInitDir   = "/etc/cloud/cloud.cfg.d"
	CloudInitFileName     = "91-azure-vnet-secondary-ips.cfg"
	cloudInitSecondaryIPs = `# azure-vnet: the NIC's secondary IP configurations are pod addresses; the
# node must not put them on eth0.
datasource:
  Azure:
    apply_network_config_for_secondary_ips: false
`
)

// Agent is the node agent's binary: installed, with its systemd unit, when
// the source has it (releases do; a plugins-only copy need not).
const Agent = "vnetd"

// Binaries are installed into the bin directory, in this order: the
// plugins and the reference plugins the conflist chains (portmap) or
// runtimes need (loopback). The standalone plugin goes first: the thin
// azure-vnet execs it, so an upgrade never leaves a thin plugin without it.
var Binaries = []string{thinplugin.StandaloneName, netconf.PluginType, netconf.IPAMType, "portmap", "loopback"}

// Options configure Install.
type Options struct {
	SourceDir       string // where the binaries are
	BinDir          string // CNI bin directory
	ConfDir         string // CNI configuration directory
	ConflistName    string // e.g. 10-azure.conflist
	Conflist        []byte
	ReplaceConflist bool // replace an existing conflist that differs
	// ModulesLoadDir, when set, receives ModulesLoadFileName naming the
	// kernel modules the plugins need at boot.
	ModulesLoadDir string
	// CloudInitDir, when set and present (cloud-init is installed),
	// receives CloudInitFileName.
	CloudInitDir string
	// NetworkdDir and NetworkManagerDir, when set and present, receive
	// the drop-ins that keep systemd-networkd and NetworkManager off the
	// plugins' links (netmanagers.go).
	NetworkdDir       string
	NetworkManagerDir string

	UnitDir  string // systemd unit directory for the agent's unit
	UnitName string // e.g. vnetd.service
	Unit     []byte // the unit; its ExecStart path is rewritten to BinDir
	UnitExec string // the agent's path in Unit's ExecStart
}

// Outcome says what Install did with one file.
type Outcome string

// Outcomes.
const (
	Installed Outcome = "installed"
	Updated   Outcome = "updated"
	Unchanged Outcome = "unchanged"
	Kept      Outcome = "kept (differs from the shipped one; replace with --force)"
	Replaced  Outcome = "replaced (previous kept as .bak)"
)

// Action is one file Install handled.
type Action struct {
	Path    string
	Outcome Outcome
}

func (o Options) validate() error {
	for what, d := range map[string]string{"source": o.SourceDir, "bin": o.BinDir, "conf": o.ConfDir} {
		if d == "" {
			return fmt.Errorf("%s directory is empty", what)
		}
	}
	if o.ConflistName == "" || filepath.Base(o.ConflistName) != o.ConflistName {
		return fmt.Errorf("conflist name %q: want a file name", o.ConflistName)
	}
	if len(o.Conflist) == 0 {
		return errors.New("conflist is empty")
	}
	var missing []string
	for _, b := range Binaries {
		if st, err := os.Stat(filepath.Join(o.SourceDir, b)); err != nil || !st.Mode().IsRegular() {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("source directory %s lacks %s", o.SourceDir, strings.Join(missing, ", "))
	}
	return nil
}

// Install copies the binaries and writes the conflist. It checks every
// source before writing anything.
func Install(o Options) ([]Action, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	for _, d := range []string{o.BinDir, o.ConfDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	var acts []Action
	for _, b := range Binaries {
		data, err := os.ReadFile(filepath.Join(o.SourceDir, b))
		if err != nil {
			return acts, err
		}
		dst := filepath.Join(o.BinDir, b)
		out, err := place(dst, data, 0o755, true)
		if err != nil {
			return acts, err
		}
		acts = append(acts, Action{dst, out})
	}
	if o.ModulesLoadDir != "" {
		if err := os.MkdirAll(o.ModulesLoadDir, 0o755); err != nil {
			return acts, err
		}
		dst := filepath.Join(o.ModulesLoadDir, ModulesLoadFileName)
		out, err := place(dst, []byte("# azure-vnet bridge mode: conntrack for bridged traffic (Service replies between pods of a node)\n"+datapath.BridgeNetfilterModule+"\n"), 0o644, true)
		if err != nil {
			return acts, err
		}
		acts = append(acts, Action{dst, out})
	}
	if o.CloudInitDir != "" {
		if st, err := os.Stat(o.CloudInitDir); err == nil && st.IsDir() {
			dst := filepath.Join(o.CloudInitDir, CloudInitFileName)
			out, err := place(dst, []byte(cloudInitSecondaryIPs), 0o644, true)
			if err != nil {
				return acts, err
			}
			acts = append(acts, Action{dst, out})
		}
	}
	managers, err := installManagerFiles(o)
	acts = append(acts, managers...)
	if err != nil {
		return acts, err
	}
	dst := filepath.Join(o.ConfDir, o.ConflistName)
	out, err := place(dst, o.Conflist, 0o644, o.ReplaceConflist)
	if err != nil {
		return acts, err
	}
	acts = append(acts, Action{dst, out})
	agent, err := installAgent(o)
	return append(acts, agent...), err
}

// installAgent installs vnetd beside the plugins and its unit into
// UnitDir, when the source has vnetd and a unit is given. The unit is
// always the release's (an operator's changes belong in a drop-in,
// vnetd.service.d/); a differing one is kept as .bak.
func installAgent(o Options) ([]Action, error) {
	src := filepath.Join(o.SourceDir, Agent)
	if st, err := os.Stat(src); err != nil || !st.Mode().IsRegular() || len(o.Unit) == 0 || o.UnitDir == "" {
		return nil, nil
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(o.BinDir, Agent)
	out, err := place(bin, data, 0o755, true)
	if err != nil {
		return nil, err
	}
	acts := []Action{{bin, out}}
	if err := os.MkdirAll(o.UnitDir, 0o755); err != nil {
		return acts, err
	}
	unit := o.Unit
	if o.UnitExec != "" {
		unit = bytes.ReplaceAll(unit, []byte("ExecStart="+o.UnitExec+" "), []byte("ExecStart="+bin+" "))
	}
	dst := filepath.Join(o.UnitDir, o.UnitName)
	out, err = place(dst, unit, 0o644, true)
	if err != nil {
		return acts, err
	}
	return append(acts, Action{dst, out}), nil
}

// SystemdRuns tells whether systemd is the init system here (what
// sd_booted(3) checks).
func SystemdRuns() bool {
	st, err := os.Stat("/run/systemd/system")
	return err == nil && st.IsDir()
}

// EnableAgent reloads systemd, enables the agent's unit and (re)starts it:
// restarted when the install changed the agent or its unit, so plugins and
// agent are of one release. Call it only where SystemdRuns and for the
// default unit directory.
func EnableAgent(unitName string, changed bool) error {
	steps := [][]string{{"daemon-reload"}, {"enable", "--now", unitName}}
	if changed {
		steps = append(steps, []string{"restart", unitName})
	}
	for _, s := range steps {
		if out, err := exec.Command("systemctl", s...).CombinedOutput(); err != nil {
			return fmt.Errorf("systemctl %s: %w: %s", strings.Join(s, " "), err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// place writes data to dst unless it holds it already. An existing file
// that differs is replaced only when replace is set.
func place(dst string, data []byte, mode fs.FileMode, replace bool) (Outcome, error) {
	old, err := os.ReadFile(dst)
	switch {
	case err == nil && bytes.Equal(old, data):
		if st, err := os.Stat(dst); err == nil && st.Mode().Perm() != mode {
			return Updated, os.Chmod(dst, mode)
		}
		return Unchanged, nil
	case err == nil && !replace:
		return Kept, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", err
	}
	outcome := Installed
	if err == nil {
		outcome = Updated
		if mode&0o111 == 0 { // a configuration: keep the operator's version
			if err := os.WriteFile(dst+".bak", old, 0o644); err != nil {
				return "", err
			}
			outcome = Replaced
		}
	}
	return outcome, writeAtomic(dst, data, mode)
}

// writeAtomic writes a temporary file beside dst and renames it over dst,
// so a runtime never executes or reads a half-written file.
func writeAtomic(dst string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	return nil
}

// Verify runs the installed azure-vnet and azure-vnet-ipam with --version
// and returns azure-vnet's answer, e.g. "CNI plugin azure-vnet v1.2.3".
func Verify(binDir string) (string, error) {
	var first string
	for _, b := range []string{netconf.PluginType, netconf.IPAMType} {
		out, err := exec.Command(filepath.Join(binDir, b), "--version").CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("verify %s: %w: %s", filepath.Join(binDir, b), err, bytes.TrimSpace(out))
		}
		if first == "" {
			first = strings.TrimSpace(string(out))
		}
	}
	return first, nil
}
