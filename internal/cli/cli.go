// Package cli is vnetctl, the operator's tool: node state, and the lab.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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

func logger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
