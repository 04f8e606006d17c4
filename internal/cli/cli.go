// Package cli is vnetctl, the node operator's tool: install, state, doctor,
// gc, and CNI calls the way a runtime makes them. "vnetctl lab" hands over
// to the lab's own binary, which a node's release does not contain.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/vnetcni/vnetcni/internal/buildinfo"
)

// Run executes vnetctl with the given arguments (os.Args) and returns the
// process exit code.
func Run(args []string) int {
	root := newRoot(os.Stdout, os.Stderr)
	root.SetArgs(args[1:])
	if err := root.ExecuteContext(context.Background()); err != nil {
		if code, ok := err.(exitCode); ok {
			return int(code)
		}
		fmt.Fprintln(os.Stderr, "vnetctl:", err)
		return 1
	}
	return 0
}

// exitCode ends a command with a status without printing an error (the
// command has already said what is wrong).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "vnetctl",
		Short:         "Operate vnetcni: node state, and an emulated Azure VNet lab",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newVersionCmd(),
		newStateCmd(),
	)
	for _, c := range extraCommands {
		root.AddCommand(c())
	}
	return root
}

// extraCommands are added by other files of the package (lab, install...).
var extraCommands []func() *cobra.Command

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "vnetctl %s\n", buildinfo.String())
			return nil
		},
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
