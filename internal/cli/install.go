package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/vnetcni/vnetcni/conf"
	"github.com/vnetcni/vnetcni/deploy/systemd"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/install"
)

func init() { extraCommands = append(extraCommands, newInstallCmd) }

func newInstallCmd() *cobra.Command {
	var o install.Options
	var forwarding bool
	var sysctlDir string
	c := &cobra.Command{
		Use:   "install",
		Short: "Install the plugins and the sample conflist on this node (idempotent)",
		Long: `Copies azure-vnet, azure-vnet-ipam, portmap and loopback from --bin-dir (default: vnetctl's
own directory) into the CNI bin directory, writes the sample conflist (built into vnetctl)
into the CNI configuration directory, turns on IPv4 forwarding in this network namespace
(persisted in --sysctl-dir: a node forwards for NodePorts before its first pod arrives), and
runs the installed azure-vnet --version. Names br_netfilter in /etc/modules-load.d/azure-vnet.conf
and loads it if it is not (bridge mode needs it), and tells cloud-init (/etc/cloud/cloud.cfg.d,
if present) not to put the NIC's secondary IPs on eth0.
When --bin-dir has vnetd (a release does), installs it too, with vnetd.service in
--unit-dir; where systemd runs and --unit-dir is the default, enables and starts it
(restarts it when either changed). Without systemd, start vnetd yourself (docs/agent.md).
Identical files are left alone; an existing conflist that differs is kept unless --force.
Same as scripts/install-cni-plugin.sh; CNI_BIN_DIR and CNI_CONF_DIR set the defaults.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.ConflistName, o.Conflist = conf.FileName, conf.Conflist
			o.UnitName, o.Unit, o.UnitExec = systemd.UnitName, systemd.Unit, systemd.DefaultExec
			acts, err := install.Install(o)
			out := cmd.OutOrStdout()
			agentChanged, unitPlaced := false, false
			for _, a := range acts {
				fmt.Fprintf(out, "%-40s %s\n", a.Path, a.Outcome)
				switch filepath.Base(a.Path) {
				case install.Agent, systemd.UnitName:
					unitPlaced = unitPlaced || filepath.Base(a.Path) == systemd.UnitName
					agentChanged = agentChanged || a.Outcome != install.Unchanged
				}
			}
			if err != nil {
				return err
			}
			if forwarding {
				a, err := install.Forwarding(sysctlDir)
				fmt.Fprintf(out, "%-40s %s\n", a.Path, a.Outcome)
				if err != nil {
					return err
				}
			}
			v, err := install.Verify(o.BinDir)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "verified: %s\n", v)
			// Bridge mode needs br_netfilter now, not only after a reboot.
			if loaded, _, err := datapath.BridgeNetfilter(); err == nil && !loaded {
				if err := datapath.LoadModule(datapath.BridgeNetfilterModule); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v (bridge mode loads it on its first pod)\n", err)
				}
			}
			switch {
			case !unitPlaced:
			case o.UnitDir != install.DefaultUnitDir || !install.SystemdRuns():
				fmt.Fprintf(out, "%s not enabled: systemd does not run here or --unit-dir is not %s\n", systemd.UnitName, install.DefaultUnitDir)
			default:
				if err := install.EnableAgent(systemd.UnitName, agentChanged); err != nil {
					return err
				}
				fmt.Fprintf(out, "%s enabled and running\n", systemd.UnitName)
			}
			return nil
		},
	}
	c.Flags().StringVar(&o.SourceDir, "bin-dir", selfDir(), "where the binaries to install are")
	c.Flags().StringVar(&o.BinDir, "cni-bin-dir", envOr("CNI_BIN_DIR", install.DefaultBinDir), "CNI bin directory ($CNI_BIN_DIR)")
	c.Flags().StringVar(&o.ConfDir, "cni-conf-dir", envOr("CNI_CONF_DIR", install.DefaultConfDir), "CNI configuration directory ($CNI_CONF_DIR)")
	c.Flags().StringVar(&o.ModulesLoadDir, "modules-load-dir", envOr("MODULES_LOAD_DIR", install.DefaultModulesLoadDir), "where to name the kernel modules to load at boot, br_netfilter ($MODULES_LOAD_DIR; empty: nowhere)")
	c.Flags().StringVar(&o.CloudInitDir, "cloud-init-dir", envOr("CLOUD_INIT_DIR", install.DefaultCloudInitDir), "where cloud-init is told not to put the NIC's secondary IPs on eth0, if it exists ($CLOUD_INIT_DIR; empty: nowhere)")
	c.Flags().StringVar(&o.NetworkdDir, "networkd-dir", envOr("NETWORKD_DIR", install.DefaultNetworkdDir), "where systemd-networkd is told to leave the bridge and the pods' veths alone, if it exists ($NETWORKD_DIR; empty: nowhere)")
	c.Flags().StringVar(&o.NetworkManagerDir, "networkmanager-dir", envOr("NETWORKMANAGER_DIR", install.DefaultNetworkManagerDir), "where NetworkManager is told the same, if it exists ($NETWORKMANAGER_DIR; empty: nowhere)")
	c.Flags().StringVar(&o.UnitDir, "unit-dir", envOr("SYSTEMD_UNIT_DIR", install.DefaultUnitDir), "systemd unit directory for vnetd.service; \"\" installs neither vnetd nor its unit ($SYSTEMD_UNIT_DIR)")
	c.Flags().BoolVar(&o.ReplaceConflist, "force", os.Getenv("REPLACE_CONFLIST") == "1", "replace an existing conflist that differs (the old one is kept as .bak; $REPLACE_CONFLIST=1)")
	c.Flags().BoolVar(&forwarding, "forwarding", os.Getenv("ENABLE_IP_FORWARD") != "0", "turn on net.ipv4.ip_forward ($ENABLE_IP_FORWARD=0 leaves it alone)")
	c.Flags().StringVar(&sysctlDir, "sysctl-dir", envOr("SYSCTL_DIR", install.DefaultSysctlDir), "where to persist it (empty: do not persist; $SYSCTL_DIR)")
	return c
}

// selfDir is the directory of the running vnetctl.
func selfDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "."
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return filepath.Dir(exe)
}
