// Package labcli is vnetctl-lab, the lab's command line: an emulated Azure
// VNet on this machine (vnetctl lab … runs it). It is not part of a node's
// release: the product's vnetctl finds vnetctl-lab beside itself or on PATH
// and hands it the arguments, as kubectl does with its plugins.
package labcli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vnetcni/vnetcni/internal/cnirunner"
	"github.com/vnetcni/vnetcni/internal/install"
	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/k8slab"
	"github.com/vnetcni/vnetcni/lab/plan"
	"github.com/vnetcni/vnetcni/lab/runtimes"
	"github.com/vnetcni/vnetcni/lab/vnetlab"
)

// Run executes the lab command with the given arguments (os.Args; the
// first names the program) and returns the process exit code.
func Run(args []string) int {
	root := newLabCmd()
	root.SetArgs(args[1:])
	if err := root.ExecuteContext(context.Background()); err != nil {
		if code, ok := err.(exitCode); ok {
			return int(code)
		}
		fmt.Fprintln(os.Stderr, "vnetctl lab:", err)
		return 1
	}
	return 0
}

// exitCode ends a command with a status without printing an error (the
// command has already said what is wrong).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func logger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func newLabCmd() *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:           "vnetctl lab",
		SilenceUsage:  true,
		SilenceErrors: true,
		Short:         "An emulated Azure virtual network on this machine, with the real plugins",
		Long: `The lab builds an Azure VNet out of network namespaces: a fabric with Azure's SDN rules,
one namespace per VM whose eth0 is its NIC (with secondary IP configurations as the pod pool),
the wireserver and IMDS at their Azure addresses, and an internet host behind the fabric's
outbound NAT. Pods are attached by the real azure-vnet plugins through libcni.
Nothing outside the lab's namespaces and /var/run/vnetcni-lab/<name> is touched.`,
	}
	c.PersistentFlags().StringVar(&name, "name", vnetlab.DefaultName, "lab name (1-8 lower-case letters and digits)")
	c.AddCommand(labUpCmd(&name), labDownCmd(&name), labPlanCmd(), labPodsCmd(&name), labCheckCmd(&name),
		labStatusCmd(&name), labFaultCmd(&name), labServeCmd(&name), labKubeconfigCmd(&name), labK8sCmd(&name), labScaleCmd(&name))
	return c
}

// defaultBinDir is where the plugins are: next to vnetctl-lab (bin/ after
// make build), else /opt/cni/bin.
func defaultBinDir() string {
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		if _, err := os.Stat(filepath.Join(dir, "azure-vnet")); err == nil {
			return dir
		}
	}
	return install.DefaultBinDir
}

func readDefinition(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}

// modelUsage describes --model.
const modelUsage = "network model: azure-cni (pods take the NIC's VNet addresses), overlay (Azure CNI Overlay: a /24 of a private pod CIDR per node) or kubenet (a pod CIDR per node, a route table on the subnet); default: the definition's, else azure-cni"

func labUpCmd(name *string) *cobra.Command {
	var file, mode, model, binDir, k8sBinDir string
	var kubernetes, noAgent, realImage bool
	var image fabric.Image
	c := &cobra.Command{
		Use:   "up",
		Short: "Build the lab (default: the seed's example cluster, bridge mode)",
		Long: `Build the lab from a cluster definition in the ACS-Engine shape (-f), by default the seed's
example: VNet 10.0.0.0/16, subnet 10.0.0.0/20, one master at 10.0.1.50 and two agents,
max-pods 30. Running up on a half-built lab repairs it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			def, err := readDefinition(file)
			if err != nil {
				return err
			}
			if realImage {
				image.SecondariesOnEth0, image.ForwardDrop = true, true
			}
			l, err := vnetlab.Up(cmd.Context(), vnetlab.UpOptions{Name: *name, Definition: def, Mode: mode, Model: model, BinDir: binDir, Progress: cmd.ErrOrStderr(),
				Kubernetes: kubernetes, K8sBinDir: k8sBinDir, NoAgent: noAgent, Image: image})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "lab %q is up: %d VMs in %s (%s, %s mode)\n", l.Name, len(l.Spec.VMs), l.Plan.Subnet, l.Plan.Model, l.Mode)
			if l.Kubernetes != nil {
				fmt.Fprintf(out, "Kubernetes %s: API server %s:443 in %s; export KUBECONFIG=%s\n",
					k8slab.Version, l.Kubernetes.VIP, l.Plan.APIServer.Subnet, l.Kubernetes.AdminKubeconfig())
				fmt.Fprintln(out, "next: kubectl apply -f examples/; vnetctl lab check --kubernetes; vnetctl lab down")
				return nil
			}
			nodes := l.Nodes()
			fmt.Fprintf(out, "next: vnetctl lab pods add %s web-1; vnetctl lab check; vnetctl lab down\n", nodes[len(nodes)-1].Name)
			return nil
		},
	}
	c.Flags().BoolVar(&kubernetes, "kubernetes", false, "also run Kubernetes: control plane in the API server's delegated subnet, a kubelet node per VM")
	c.Flags().BoolVar(&noAgent, "no-agent", false, "run no vnetd on the VMs: the plugins work standalone")
	c.Flags().BoolVar(&image.SecondariesOnEth0, "secondaries-on-eth0", false, "boot the VMs with the NIC's secondary IPs on eth0, as cloud-init's Azure datasource does")
	c.Flags().BoolVar(&image.ForwardDrop, "forward-drop", false, "boot the VMs with a FORWARD policy of DROP (ip filter FORWARD), as Docker sets")
	c.Flags().BoolVar(&image.DHCP, "dhcp", false, "run a DHCP client (udhcpc) on each VM's eth0 that keeps its address from the fabric's DHCP, as Azure's VMs do")
	c.Flags().BoolVar(&realImage, "real-image", false, "both: --secondaries-on-eth0 --forward-drop")
	c.Flags().StringVar(&k8sBinDir, "k8s-bin-dir", k8slab.DefaultBinDir, "Kubernetes binaries (built by scripts/k8s-binaries.sh)")
	c.Flags().StringVarP(&file, "file", "f", "", "cluster definition (ACS-Engine JSON); the seed's example when empty")
	c.Flags().StringVar(&mode, "mode", "", "network mode: bridge or transparent (default: the definition's, else bridge; transparent in the overlay and kubenet models)")
	c.Flags().StringVar(&model, "model", "", modelUsage)
	c.Flags().StringVar(&binDir, "bin-dir", defaultBinDir(), "directory with azure-vnet, azure-vnet-ipam, portmap and loopback")
	return c
}

func labScaleCmd(name *string) *cobra.Command {
	var model, output string
	var nodes int
	c := &cobra.Command{
		Use:   "scale",
		Short: "Simulate a large overlay or kubenet cluster: plan and fabric routes without its VMs",
		Long: `Plan a cluster of --nodes nodes in the --model model and program what the model puts in
the fabric (overlay: a route per node's pod CIDR and the overlay sets; kubenet: the subnet's route
table, one route per node through the cloud API, then one node more), with one dummy interface for
every VM's port; report the time and memory taken. By default: kubenet at 400 nodes and overlay at
5,000. Uses only the namespace <name>-fab, removed at the end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			runs := []struct {
				model string
				nodes int
			}{{plan.ModelKubenet, plan.MaxKubenetNodes}, {plan.ModelOverlay, 5000}}
			if model != "" {
				n := nodes
				if n == 0 {
					n = 5000
					if model == plan.ModelKubenet {
						n = plan.MaxKubenetNodes
					}
				}
				runs = runs[:1]
				runs[0].model, runs[0].nodes = model, n
			}
			var results []*vnetlab.ScaleResult
			for _, r := range runs {
				res, err := vnetlab.Scale(cmd.Context(), *name, r.model, r.nodes)
				if err != nil {
					return err
				}
				results = append(results, res)
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				return writeJSON(out, results)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MODEL\tNODES\tPOD CIDR\tPLAN\tPROGRAM\tMAIN ROUTES\tROUTE TABLE ROUTES\tSET INTERVALS\tGO HEAP\tPEAK RSS")
			for _, r := range results {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%.1f MB\t%.1f MB\n", r.Model, r.Nodes, r.PodCIDR,
					r.Plan.Round(time.Millisecond), r.Program.Round(time.Millisecond), r.MainRoutes, r.TableRoutes, r.SetElements, r.HeapMB, r.MaxRSSMB)
			}
			tw.Flush()
			for _, r := range results {
				if r.OneMore != "" {
					fmt.Fprintf(out, "%s, node %d: %s\n", r.Model, r.Nodes+1, r.OneMore)
				}
			}
			return nil
		},
	}
	c.Flags().StringVar(&model, "model", "", "overlay or kubenet (default: both)")
	c.Flags().IntVar(&nodes, "nodes", 0, "nodes (default: 400 for kubenet, 5000 for overlay)")
	c.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return c
}

func labDownCmd(name *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Remove every namespace, link and file the lab made (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := vnetlab.Down(*name); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab %q removed\n", *name)
			return nil
		},
	}
}

func labPlanCmd() *cobra.Command {
	var file, mode, model, output string
	var kubernetes bool
	c := &cobra.Command{
		Use:   "plan",
		Short: "Validate a cluster definition and print its address plan; creates nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			def, err := readDefinition(file)
			if err != nil {
				return err
			}
			p, err := vnetlab.PlanFor(def, mode, model, kubernetes)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				return writeJSON(out, p)
			}
			used, usable := p.Utilisation()
			fmt.Fprintf(out, "VNet %s  subnet %s  gateway %s  model %s  mode %s\n", p.VNet, p.Subnet, p.Gateway, p.Model, p.Mode)
			if p.PodCIDRModel() {
				fmt.Fprintf(out, "pod CIDR %s (outside the VNet), a /%d per node\n", p.PodCIDR, plan.NodePodCIDRBits)
			}
			if p.VNetName != "" {
				fmt.Fprintf(out, "resource group %s  virtual network %s  subnet %s\n", p.ResourceGroup, p.VNetName, p.SubnetName)
			}
			fmt.Fprintln(out)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			if p.PodCIDRModel() {
				fmt.Fprintln(tw, "VM\tROLE\tPOOL\tPRIMARY\tPOD CIDR\tMAX PODS")
			} else {
				fmt.Fprintln(tw, "VM\tROLE\tPOOL\tPRIMARY\tSECONDARY (POD) IPS\tMAX PODS")
			}
			for _, n := range p.Nodes {
				sec := "-"
				switch {
				case n.PodCIDR.IsValid():
					sec = n.PodCIDR.String()
				case len(n.SecondaryIPs) > 0:
					sec = fmt.Sprintf("%s - %s (%d)", n.SecondaryIPs[0], n.SecondaryIPs[len(n.SecondaryIPs)-1], len(n.SecondaryIPs))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", n.Name, n.Role, n.Pool, n.PrimaryIP, sec, n.MaxPods)
			}
			tw.Flush()
			switch p.Model {
			case plan.ModelOverlay:
				fmt.Fprintf(out, "\nthe fabric routes each node's pod CIDR to its NIC (no route table, no encapsulation)\n")
			case plan.ModelKubenet:
				fmt.Fprintf(out, "\nroute table on subnet %s: %d of at most %d routes (one per node)\n", p.Subnet, len(p.Nodes), plan.MaxKubenetNodes)
			}
			if o := p.Outside; o != nil {
				fmt.Fprintf(out, "VM outside the cluster: %s %s in subnet %s\n", o.Name, o.PrimaryIP, p.OutsideSubnet)
			}
			fmt.Fprintf(out, "\nsubnet utilisation: %d of %d usable addresses (%.1f%%)\n", used, usable, 100*float64(used)/float64(usable))
			if a := p.APIServer; a != nil {
				fmt.Fprintf(out, "API server subnet %s (delegated): control plane %s, internal load balancer VIP %s, %d addresses reserved\n",
					a.Subnet, a.NodeIP, a.VIP, len(a.Reserved))
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "cluster definition (ACS-Engine JSON); the seed's example when empty")
	c.Flags().BoolVar(&kubernetes, "kubernetes", false, "plan the API server's delegated subnet too")
	c.Flags().StringVar(&mode, "mode", "", "network mode: bridge or transparent")
	c.Flags().StringVar(&model, "model", "", modelUsage)
	c.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return c
}

func labPodsCmd(name *string) *cobra.Command {
	c := &cobra.Command{Use: "pods", Short: "Add, remove and list the lab's pods"}
	var ports []string
	var runtime string
	add := &cobra.Command{
		Use:   "add VM POD",
		Short: "Create a pod on a VM, attached by the VM's plugins through libcni (or --runtime containerd)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var pms []cnirunner.PortMapping
			for _, s := range ports {
				pm, err := parsePort(s)
				if err != nil {
					return err
				}
				pms = append(pms, pm)
			}
			pause := filepath.Join(defaultBinDir(), runtimes.PauseBinaryName)
			p, err := vnetlab.AddRuntimePod(cmd.Context(), *name, args[0], args[1], runtime, pause, pms)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pod %s/%s: %s (netns %s)\n", p.VM, p.Name, p.IP, p.NetNS)
			return nil
		},
	}
	add.Flags().StringArrayVarP(&ports, "port", "p", nil, "host port mapping HOSTPORT:CONTAINERPORT[/tcp|udp] (portmap)")
	add.Flags().StringVar(&runtime, "runtime", vnetlab.RuntimeLibcni, "libcni, or containerd: a pod sandbox through the CRI of a containerd started in the VM")
	del := &cobra.Command{
		Use:   "del VM POD",
		Short: "Detach and remove a pod",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return vnetlab.DelPod(cmd.Context(), *name, args[0], args[1])
		},
	}
	var output string
	list := &cobra.Command{
		Use:   "list",
		Short: "List the lab's pods",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := vnetlab.Load(*name)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), l.Pods)
			}
			printPods(cmd.OutOrStdout(), l.Pods)
			return nil
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	c.AddCommand(add, del, list)
	return c
}

func parsePort(s string) (cnirunner.PortMapping, error) {
	pm := cnirunner.PortMapping{Protocol: "tcp"}
	body, proto, ok := strings.Cut(s, "/")
	if ok {
		pm.Protocol = proto
	}
	h, ctr, ok := strings.Cut(body, ":")
	hp, err1 := strconv.Atoi(h)
	cp, err2 := strconv.Atoi(ctr)
	if !ok || err1 != nil || err2 != nil || hp < 1 || hp > 65535 || cp < 1 || cp > 65535 || (pm.Protocol != "tcp" && pm.Protocol != "udp") {
		return pm, fmt.Errorf("port %q: want HOSTPORT:CONTAINERPORT[/tcp|udp]", s)
	}
	pm.HostPort, pm.ContainerPort = hp, cp
	return pm, nil
}

func printPods(w io.Writer, pods []vnetlab.Pod) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tPOD\tIP\tNETNS\tPORTS")
	for _, p := range pods {
		var ps []string
		for _, pm := range p.Ports {
			ps = append(ps, fmt.Sprintf("%d→%d/%s", pm.HostPort, pm.ContainerPort, pm.Protocol))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.VM, p.Name, p.IP, p.NetNS, dash(strings.Join(ps, ",")))
	}
	tw.Flush()
}

func labCheckCmd(name *string) *cobra.Command {
	var output string
	var kubernetes bool
	c := &cobra.Command{
		Use:   "check",
		Short: "Probe connectivity and compare with the network model; non-zero exit on a mismatch",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			check := vnetlab.Check
			if kubernetes {
				check = vnetlab.CheckKubernetes
			}
			m, err := check(cmd.Context(), *name)
			if m == nil {
				return err
			}
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "check stopped early:", err)
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				if err := writeJSON(out, m); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CHECK\tFROM\tTO\tEXPECTED\tOBSERVED\t")
				for _, r := range m.Rows {
					mark := "ok"
					if !r.OK {
						mark = "MISMATCH"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Check, r.From, r.To, r.Expected, r.Observed, mark)
				}
				tw.Flush()
				model := m.Model
				if model == "" {
					model = plan.ModelAzureCNI
				}
				fmt.Fprintf(out, "\n%d checks: %d as expected, %d mismatches (lab %s, %s, %s mode)\n", len(m.Rows), m.Passed, m.Failed, m.Lab, model, m.Mode)
			}
			if m.Failed > 0 {
				return exitCode(1)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	c.Flags().BoolVar(&kubernetes, "kubernetes", false, "check the lab's Kubernetes cluster: pod addresses, Services, DNS, API server VIP, pool exhaustion, and the network policy matrix (examples/network-policy) when vnetd enforces policy")
	return c
}

func labStatusCmd(name *string) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "status",
		Short: "VMs, NICs, address pools, pods and fabric drop counters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := vnetlab.GetStatus(*name)
			if s == nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				return writeJSON(out, s)
			}
			daemon := "not running"
			if s.DaemonPID > 0 {
				daemon = fmt.Sprintf("pid %d", s.DaemonPID)
			}
			model := s.Model
			if model == "" {
				model = plan.ModelAzureCNI
			}
			fmt.Fprintf(out, "lab %s: %s, %s mode, VNet %s, subnet %s, up %s, services daemon %s\n", s.Name, model, s.Mode, s.VNet, s.Subnet, s.Up, daemon)
			if k := s.Kubernetes; k != nil {
				fmt.Fprintf(out, "Kubernetes %s: API server %s (subnet %s); KUBECONFIG=%s\n", k.Version, k.APIServer, k.APISubnet, k.Kubeconfig)
			}
			if !s.Complete {
				fmt.Fprintln(out, "warning: the lab is half-built; run vnetctl lab up again to repair it")
			}
			fmt.Fprintln(out)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VM\tROLE\tNIC MAC\tPRIMARY IP\tPUBLIC IP\tPOOL USED\tPOOL FREE\tPODS\tFABRIC DROPS (MAC/IP/OTHER)")
			for _, v := range s.VMs {
				public := "-"
				if v.PublicIP.IsValid() {
					public = v.PublicIP.String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%d\t%d\t%d/%d/%d\n", v.Name, v.Role, v.MAC, v.PrimaryIP, public,
					v.PoolUsed, v.PoolSize, v.PoolFree, v.Pods, v.Drops.BadMAC, v.Drops.BadIP, v.Drops.Other)
			}
			tw.Flush()
			fmt.Fprintf(out, "fabric drops of internet-bound traffic without a public IP: %d\n\n", s.NoPublicDrop)
			printPods(out, s.Pods)
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", err)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return c
}

func labFaultCmd(name *string) *cobra.Command {
	return &cobra.Command{
		Use:   "fault SERVICE down|up",
		Short: "Stop or restart one lab service (wireserver, dns, imds, internet) to inject a fault",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := vnetlab.Fault(*name, args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is %s\n", args[0], args[1])
			return nil
		},
	}
}

func labServeCmd(name *string) *cobra.Command {
	return &cobra.Command{
		Use:    "serve",
		Short:  "Run the lab's services (started by lab up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return vnetlab.Serve(cmd.Context(), *name, logger(cmd.ErrOrStderr()))
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func labKubeconfigCmd(name *string) *cobra.Command {
	return &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the path of the lab cluster's admin kubeconfig (export KUBECONFIG=$(vnetctl lab kubeconfig))",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := vnetlab.Load(*name)
			if err != nil {
				return err
			}
			if l.Kubernetes == nil {
				return fmt.Errorf("lab %s runs no Kubernetes (vnetctl lab up --kubernetes)", *name)
			}
			fmt.Fprintln(cmd.OutOrStdout(), l.Kubernetes.AdminKubeconfig())
			return nil
		},
	}
}

// labK8sCmd holds the cluster's supervisors, started by lab up in the right
// namespaces; not for interactive use.
func labK8sCmd(name *string) *cobra.Command {
	c := &cobra.Command{Use: "k8s", Short: "The lab cluster's supervisors (started by lab up --kubernetes)", Hidden: true}
	// supervise runs a supervisor on the lab's cluster until SIGTERM.
	supervise := func(cmd *cobra.Command, run func(context.Context, *k8slab.Cluster) error) error {
		cl, err := k8slab.Load(filepath.Join(vnetlab.Dir(*name), "k8s"))
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return run(ctx, cl)
	}
	cp := &cobra.Command{
		Use:  "controlplane",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return supervise(cmd, k8slab.RunControlPlane) },
	}
	var vm string
	node := &cobra.Command{
		Use:  "node",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return supervise(cmd, func(ctx context.Context, cl *k8slab.Cluster) error { return k8slab.RunNode(ctx, cl, vm) })
		},
	}
	node.Flags().StringVar(&vm, "vm", "", "the VM this node runs on")
	c.AddCommand(cp, node)
	return c
}
