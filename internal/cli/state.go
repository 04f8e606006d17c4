package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vnetcni/vnetcni/internal/ipam"
	"github.com/vnetcni/vnetcni/internal/store"
)

func newStateCmd() *cobra.Command {
	var dir, output string
	c := &cobra.Command{
		Use:   "state",
		Short: "Print the node's networks, address pools, allocations and endpoints",
		Long: `Print what azure-vnet and azure-vnet-ipam have recorded on this node.
The state lives in ` + store.DefaultDir + ` (or $` + store.EnvDir + `).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := store.New(dir).Read()
			if err != nil {
				return err
			}
			switch output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			case "table", "":
				printState(cmd.OutOrStdout(), st, time.Now())
				return nil
			}
			return fmt.Errorf("unknown output format %q (table or json)", output)
		},
	}
	c.Flags().StringVar(&dir, "state-dir", store.DirFromEnv(), "state directory")
	c.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return c
}

func printState(w io.Writer, st *store.State, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tMODE\tMASTER\tBRIDGE\tPOOL")
	for _, name := range sortedKeys(st.Networks) {
		n := st.Networks[name]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Name, n.Mode, n.Master, dash(n.Bridge), n.Pool)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "POOL\tSUBNET\tGATEWAY\tPRIMARY\tADDRESSES\tIN USE\tFREE\tREAD\tSOURCE")
	for _, id := range sortedKeys(st.Pools) {
		p := st.Pools[id]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s ago\t%s\n", p.ID, p.Subnet, p.Gateway, p.PrimaryIP,
			len(p.Addresses), ipam.InUse(st, p), len(ipam.Free(st, p)), now.Sub(p.ReadAt).Round(time.Second), p.Source)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "IP\tCONTAINER\tIFNAME\tNETWORK\tHOST IF\tPOD MAC\tPOD\tOWNER")
	for _, a := range st.SortedAllocations() {
		hostIf, mac, pod := "-", "-", "-"
		if e, ok := st.Endpoints[store.EndpointKey(a.ContainerID, a.IfName)]; ok {
			hostIf, mac = e.HostIfName, e.PodMAC
			if e.PodName != "" {
				pod = e.PodNamespace + "/" + e.PodName
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.IP, short(a.ContainerID), a.IfName, dash(a.Network), hostIf, mac, pod, a.Owner)
	}
	tw.Flush()
	for _, e := range st.SortedEndpoints() {
		if _, ok := st.Allocations[e.IP.Addr().String()]; !ok {
			fmt.Fprintf(w, "warning: endpoint %s has no allocation\n", e.Key())
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func short(id string) string {
	if len(id) > 12 && !strings.ContainsAny(id, "-_.") {
		return id[:12]
	}
	return id
}
