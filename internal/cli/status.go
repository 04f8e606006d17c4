package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/store"
)

func init() { extraCommands = append(extraCommands, newStatusCmd) }

// newStatusCmd shows the node agent's health, pools and repairs.
func newStatusCmd() *cobra.Command {
	var stateDir, output string
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the node agent (vnetd): health, address pools, datapath repairs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := agentapi.GetStatus(stateDir)
			if errors.Is(err, agentapi.ErrNoAgent) {
				return fmt.Errorf("no vnetd serves %s: the plugins work standalone (start it: systemctl start vnetd, or the DaemonSet)", stateDir)
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				e := json.NewEncoder(out)
				e.SetIndent("", "  ")
				return e.Encode(s)
			}
			ready := "ready"
			if !s.Ready {
				ready = "not ready"
			}
			fmt.Fprintf(out, "vnetd %s, pid %d, %s, state %s\n", s.Version, s.PID, ready, s.StateDir)
			last := "never"
			if !s.LastResync.IsZero() {
				last = time.Since(s.LastResync).Round(time.Second).String() + " ago"
			}
			fmt.Fprintf(out, "networks: %v; last reconcile %s\n", s.Networks, last)
			for _, p := range s.Pools {
				fmt.Fprintf(out, "pool %s: %d addresses, %d used, %d free (from %s, read %s ago)\n", p.NIC, p.Total, p.Used, p.Free, p.Source, time.Since(p.ReadAt).Round(time.Second))
			}
			kinds := make([]string, 0, len(s.Repairs))
			for k := range s.Repairs {
				kinds = append(kinds, k)
			}
			sort.Strings(kinds)
			if len(kinds) == 0 {
				fmt.Fprintln(out, "repairs: none")
			}
			for _, k := range kinds {
				fmt.Fprintf(out, "repairs of %s: %d\n", k, s.Repairs[k])
			}
			return nil
		},
	}
	c.Flags().StringVar(&stateDir, "state-dir", store.DirFromEnv(), "the state directory the agent serves")
	c.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return c
}
