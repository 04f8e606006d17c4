package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vnetcni/vnetcni/internal/doctor"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/store"
)

func init() { extraCommands = append(extraCommands, newDoctorCmd, newGCCmd) }

const doctorExitCodes = `
Exit status: 0 when nothing is wrong (after --fix, when everything was
repaired), 1 when something is wrong (or could not be repaired), 2 when the
check could not run.

The networks are taken from the state's records and the host veths'
aliases (mode, bridge, name); no network configuration is needed. Inside a
lab VM, point it at the VM's namespace and state:
  vnetctl doctor --netns lab-vm1 --state-dir /var/run/vnetcni-lab/lab/vms/vm1/state`

func newDoctorCmd() *cobra.Command {
	return doctorCmd("doctor",
		"Compare the node's CNI state, kernel and address pool; --fix repairs the differences",
		`Compares what azure-vnet recorded (allocations, endpoints, the cached
address pool) with what the kernel holds (host veths and the attachment
each records in its alias, nftables pod elements, routes through host
veths) and reports every difference:

  state-damaged          the state file cannot be trusted (rebuilt from the kernel)
  unrecorded-attachment  a veth's attachment the state lost (recorded again)
  duplicate-address      an unrecorded attachment uses someone else's address (removed)
  attachment-mismatch    state and alias disagree (the kernel's is recorded)
  missing-veth           a recorded attachment has no veth (removed, address released)
  unlabeled-veth         a veth without alias, from an interrupted ADD (removed)
  leaked-allocation      an address held by nothing (released)
  missing-element        a live pod lacks nftables elements (added)
  stale-element          an nftables element of no live pod (deleted)
  missing-route          a transparent-mode pod lacks its /32 route (added)
  stale-route            a route through a host veth that is not its pod's (deleted)
  temp-file              a temporary state file of a killed writer (removed)
  stale-lock-file        the lock file of an attachment that is gone (removed)
  outside-pool           an allocated address the NIC no longer has (reported only)
  missing-rules          a network's nftables rules are missing or damaged, e.g. by
                         nft flush ruleset (programmed again, with every live pod)
  node-holds-pod-address a pod's address is on a node link too, e.g. put on eth0 by
                         cloud-init or a DHCP client (taken off the node's link)
  br-netfilter-off       bridge mode without br_netfilter loaded and on: Service
                         replies between pods of the node hang (loaded, turned on)

Repairs of an attachment wait for a command running on it and look again
first.`+doctorExitCodes, nil)
}

func newGCCmd() *cobra.Command {
	return doctorCmd("gc",
		"Find what interrupted or failed CNI commands left behind; --fix removes it",
		`Reports the garbage among the differences vnetctl doctor finds: temporary
and lock files, veths without alias or without record, recorded attachments
whose veth is gone, addresses held by nothing, nftables elements and routes
of no live pod. Unlike CNI GC it needs no list of valid attachments: it only
removes what no live attachment uses.`+doctorExitCodes, doctor.Kind.Garbage)
}

func doctorCmd(use, short, long string, which func(doctor.Kind) bool) *cobra.Command {
	var stateDir, ns, output string
	var fix bool
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("unknown output format %q (table or json)", output)
			}
			path := ns
			if ns != "" && !strings.ContainsRune(ns, '/') {
				path = netns.Path(ns)
			}
			d, err := doctor.Open(stateDir, path)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "vnetctl %s: %v\n", use, err)
				return exitCode(2)
			}
			defer d.Close()
			r, err := d.Run(fix, which)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "vnetctl %s: %v\n", use, err)
				return exitCode(2)
			}
			if output == "json" {
				if err := writeJSON(cmd.OutOrStdout(), r); err != nil {
					return err
				}
			} else {
				printReport(cmd.OutOrStdout(), r, fix)
			}
			if len(r.Remaining) > 0 {
				return exitCode(1)
			}
			return nil
		},
	}
	c.Flags().StringVar(&stateDir, "state-dir", store.DirFromEnv(), "state directory")
	c.Flags().StringVar(&ns, "netns", "", "network namespace the plugins run in: a name under /run/netns or a path (default: this process's)")
	c.Flags().BoolVar(&fix, "fix", false, "repair what is found")
	c.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return c
}

func printReport(w io.Writer, r *doctor.Report, fix bool) {
	if len(r.Found) == 0 {
		fmt.Fprintln(w, "nothing wrong")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "KIND\tNETWORK\tSUBJECT\tDETAIL"
	if fix {
		head += "\tREPAIR"
	}
	fmt.Fprintln(tw, head)
	for _, f := range r.Found {
		line := fmt.Sprintf("%s\t%s\t%s\t%s", f.Kind, dash(f.Network), f.Subject, f.Detail)
		if fix {
			switch {
			case f.Fixed:
				line += "\trepaired"
			default:
				line += "\tnot repaired: " + f.FixError
			}
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	if fix {
		fmt.Fprintf(w, "%d found, %d repaired, %d left\n", len(r.Found), len(r.Found)-countUnfixed(r.Found), len(r.Remaining))
	} else {
		fmt.Fprintf(w, "%d found; run with --fix to repair\n", len(r.Found))
	}
}

func countUnfixed(fs []*doctor.Finding) int {
	n := 0
	for _, f := range fs {
		if !f.Fixed {
			n++
		}
	}
	return n
}
