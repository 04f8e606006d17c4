package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/spf13/cobra"

	"github.com/vnetcni/vnetcni/internal/cnirunner"
	"github.com/vnetcni/vnetcni/internal/install"
)

func init() { extraCommands = append(extraCommands, newCNICmd) }

// cniFlags are what a runtime knows when it calls the plugins.
type cniFlags struct {
	binDirs     string
	confDir     string
	network     string
	cacheDir    string
	hostNetNS   string
	netns       string
	containerID string
	ifName      string
	podNS       string
	podName     string
	output      string
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func newCNICmd() *cobra.Command {
	f := &cniFlags{}
	c := &cobra.Command{
		Use:   "cni",
		Short: "Attach or detach a container the way a runtime does (libcni, the node's conflist)",
		Long: `Runs the node's CNI network configuration — the first conflist in the configuration
directory, or the one named by --network — for one container, through libcni as container
runtimes do, passing K8S_POD_NAMESPACE and K8S_POD_NAME. scripts/docker-run.sh uses it to
attach Docker containers started with --network none. With --host-netns the plugins run in
that network namespace (a lab VM) instead of this one.`,
	}
	pf := c.PersistentFlags()
	pf.StringVar(&f.binDirs, "cni-path", envOr("CNI_PATH", install.DefaultBinDir), "plugin directories, ':'-separated ($CNI_PATH)")
	pf.StringVar(&f.confDir, "conf-dir", envOr("CNI_CONF_DIR", install.DefaultConfDir), "network configuration directory ($CNI_CONF_DIR)")
	pf.StringVar(&f.network, "network", "", "network name (default: the first conflist of --conf-dir by file name)")
	pf.StringVar(&f.cacheDir, "cache-dir", envOr("CNI_CACHE_DIR", "/var/lib/cni"), "libcni's result cache ($CNI_CACHE_DIR)")
	pf.StringVar(&f.hostNetNS, "host-netns", os.Getenv("VNET_HOST_NETNS"), "run the plugins inside this network namespace path ($VNET_HOST_NETNS)")
	pf.StringVar(&f.netns, "netns", "", "the container's network namespace path, e.g. /proc/PID/ns/net")
	pf.StringVar(&f.containerID, "container-id", "", "container ID (CNI_CONTAINERID)")
	pf.StringVar(&f.ifName, "ifname", "eth0", "interface name in the container")
	pf.StringVar(&f.podNS, "pod-namespace", "", "K8S_POD_NAMESPACE")
	pf.StringVar(&f.podName, "pod-name", "", "K8S_POD_NAME")
	add := &cobra.Command{
		Use:   "add",
		Short: "CNI ADD: attach the container; prints the result (-o ip: its address only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, list, p, err := f.setup(true)
			if err != nil {
				return err
			}
			res, err := r.Add(cmd.Context(), list, p)
			if err != nil {
				return fmt.Errorf("add %s to network %s: %w", p.ContainerID, list.Name, err)
			}
			cr, err := current.NewResultFromResult(res)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.output == "ip" {
				if len(cr.IPs) == 0 {
					return errors.New("the result has no address")
				}
				fmt.Fprintln(out, cr.IPs[0].Address.IP)
				return nil
			}
			return writeJSON(out, cr)
		},
	}
	add.Flags().StringVarP(&f.output, "output", "o", "json", "json (the CNI result) or ip")
	del := &cobra.Command{
		Use:   "del",
		Short: "CNI DEL: detach the container (an empty --netns is fine: the address is still released)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, list, p, err := f.setup(false)
			if err != nil {
				return err
			}
			if err := r.Del(cmd.Context(), list, p); err != nil {
				return fmt.Errorf("delete %s from network %s: %w", p.ContainerID, list.Name, err)
			}
			return nil
		},
	}
	check := &cobra.Command{
		Use:   "check",
		Short: "CNI CHECK: verify the container's attachment against the cached result",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, list, p, err := f.setup(true)
			if err != nil {
				return err
			}
			return r.Check(cmd.Context(), list, p)
		},
	}
	c.AddCommand(add, del, check)
	return c
}

// setup loads the network and builds the runner and the pod's parameters.
func (f *cniFlags) setup(needNetNS bool) (*cnirunner.Runner, *libcni.NetworkConfigList, cnirunner.Pod, error) {
	var p cnirunner.Pod
	if f.containerID == "" {
		return nil, nil, p, errors.New("--container-id is required")
	}
	if needNetNS && f.netns == "" {
		return nil, nil, p, errors.New("--netns is required")
	}
	list, err := loadNetwork(f.confDir, f.network)
	if err != nil {
		return nil, nil, p, err
	}
	host := f.hostNetNS
	if host == "" {
		host = "/proc/self/ns/net"
	}
	r := &cnirunner.Runner{NetNS: host, BinDirs: filepath.SplitList(f.binDirs), CacheDir: f.cacheDir, Stderr: os.Stderr}
	p = cnirunner.Pod{ContainerID: f.containerID, NetNS: f.netns, IfName: f.ifName, Namespace: f.podNS, Name: f.podName}
	return r, list, p, nil
}

// loadNetwork returns the named network of dir, or the first configuration
// file by name, as runtimes choose it.
func loadNetwork(dir, name string) (*libcni.NetworkConfigList, error) {
	if name != "" {
		return libcni.LoadNetworkConf(dir, name)
	}
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("read network configuration directory %s: %w", dir, err)
	}
	sort.Strings(files)
	for _, file := range files {
		if strings.HasSuffix(file, ".conflist") {
			return libcni.ConfListFromFile(file)
		}
		conf, err := libcni.ConfFromFile(file)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(map[string]any{"cniVersion": conf.Network.CNIVersion, "name": conf.Network.Name, "plugins": []json.RawMessage{conf.Bytes}})
		if err != nil {
			return nil, err
		}
		return libcni.ConfListFromBytes(b)
	}
	return nil, fmt.Errorf("no network configuration in %s", dir)
}
