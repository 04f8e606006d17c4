package cli

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vnetcni/vnetcni/conf"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/doctor"
	"github.com/vnetcni/vnetcni/internal/install"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/store"
)

func init() { extraCommands = append(extraCommands, newUninstallCmd) }

func newUninstallCmd() *cobra.Command {
	var o install.Options
	var stateDir, ns string
	var force, keepFiles bool
	c := &cobra.Command{
		Use:   "uninstall",
		Short: "Return the node to how it booted: eth0 gets its addresses back; bridge, rules, state and files go",
		Long: `For every network the state records: deletes its nftables tables and its accepts in
another firewall's FORWARD chain and, in bridge mode, detaches the NIC from the bridge,
gives it back the addresses and routes it had before (as saved when the bridge took them,
the NIC's secondary IPs included) and deletes the bridge. Then removes the state directory
and, unless --keep-files, the plugins, the conflist and the modules-load.d and cloud-init
files vnetctl install wrote (portmap and loopback stay: other networks may use them).
Refuses while pods are attached, unless --force, which deletes their host veths.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			path := ns
			if ns != "" && !strings.ContainsRune(ns, '/') {
				path = netns.Path(ns)
			}
			d, err := doctor.Open(stateDir, path)
			if err != nil {
				return err
			}
			defer d.Close()
			st, err := d.Store.Read()
			if err != nil && !(force && store.IsDamaged(err)) {
				return fmt.Errorf("read state (with --force a damaged state is ignored): %w", err)
			}
			if st == nil {
				st = store.NewState()
			}
			atts, err := d.Host.Attachments()
			if err != nil {
				return err
			}
			if n := max(len(atts), len(st.Endpoints)); n > 0 && !force {
				return fmt.Errorf("%d pods are still attached: delete them first (--force cuts them off)", n)
			}
			h := d.Host.Netlink
			var errs []error
			for _, a := range atts {
				if l, err := h.LinkByName(a.HostIfName); err == nil {
					errs = append(errs, h.LinkDel(l))
					fmt.Fprintf(out, "%-40s removed\n", a.HostIfName)
				}
			}
			for _, name := range sortedNames(st.Networks) {
				rec := st.Networks[name]
				r := datapath.Rules{Network: name, Mode: rec.Mode}
				errs = append(errs, r.RemoveForwardAccept(d.Host.NFT), r.Remove(d.Host.NFT), datapath.RemovePoolEgress(h))
				fmt.Fprintf(out, "%-40s removed\n", "nftables "+datapath.TableName(name))
				if rec.Mode == datapath.ModeBridge && rec.Bridge != "" {
					if err := (datapath.Bridge{Name: rec.Bridge, Master: rec.Master}).Restore(h, rec.MasterConfig); err != nil {
						errs = append(errs, err)
					} else {
						fmt.Fprintf(out, "%-40s removed; %s has its addresses and routes back\n", rec.Bridge, rec.Master)
					}
				}
				// The NIC's secondary IPs the image had put on it, taken off for pods.
				if len(rec.TakenOff) > 0 {
					if err := datapath.GiveBack(h, rec.Master, rec.TakenOff); err != nil {
						errs = append(errs, err)
					} else {
						fmt.Fprintf(out, "%-40s has %d secondary addresses back\n", rec.Master, len(rec.TakenOff))
					}
				}
			}
			if err := errors.Join(errs...); err != nil {
				return err
			}
			if err := os.RemoveAll(stateDir); err != nil {
				return err
			}
			fmt.Fprintf(out, "%-40s removed\n", stateDir)
			if keepFiles {
				return nil
			}
			o.ConflistName = conf.FileName
			acts, err := install.Uninstall(o)
			for _, a := range acts {
				fmt.Fprintf(out, "%-40s %s\n", a.Path, a.Outcome)
			}
			return err
		},
	}
	c.Flags().StringVar(&stateDir, "state-dir", store.DirFromEnv(), "state directory")
	c.Flags().StringVar(&ns, "netns", "", "the node's network namespace (name or path; default: this one)")
	c.Flags().BoolVar(&force, "force", false, "delete the host veths of pods still attached")
	c.Flags().BoolVar(&keepFiles, "keep-files", false, "leave the binaries, the conflist and the drop-in files")
	c.Flags().StringVar(&o.BinDir, "cni-bin-dir", envOr("CNI_BIN_DIR", install.DefaultBinDir), "CNI bin directory ($CNI_BIN_DIR)")
	c.Flags().StringVar(&o.ConfDir, "cni-conf-dir", envOr("CNI_CONF_DIR", install.DefaultConfDir), "CNI configuration directory ($CNI_CONF_DIR)")
	c.Flags().StringVar(&o.ModulesLoadDir, "modules-load-dir", envOr("MODULES_LOAD_DIR", install.DefaultModulesLoadDir), "modules-load.d directory ($MODULES_LOAD_DIR)")
	c.Flags().StringVar(&o.CloudInitDir, "cloud-init-dir", envOr("CLOUD_INIT_DIR", install.DefaultCloudInitDir), "cloud-init drop-in directory ($CLOUD_INIT_DIR)")
	c.Flags().StringVar(&o.NetworkdDir, "networkd-dir", envOr("NETWORKD_DIR", install.DefaultNetworkdDir), "systemd-networkd drop-in directory ($NETWORKD_DIR)")
	c.Flags().StringVar(&o.NetworkManagerDir, "networkmanager-dir", envOr("NETWORKMANAGER_DIR", install.DefaultNetworkManagerDir), "NetworkManager drop-in directory ($NETWORKMANAGER_DIR)")
	return c
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
