package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

func init() { extraCommands = append(extraCommands, newLabCmd) }

// labBinary is the lab's executable. The lab (an emulated VNet, its
// runtimes and a Kubernetes cluster) is not linked into vnetctl: a node's
// release holds only the product. "vnetctl lab …" runs vnetctl-lab from
// beside vnetctl or from PATH, as kubectl runs its plugins.
const labBinary = "vnetctl-lab"

func newLabCmd() *cobra.Command {
	return helperCmd("lab", "An emulated Azure virtual network on this machine (runs "+labBinary+")", findLab)
}

// helperCmd is a vnetctl command that hands its arguments to another
// binary, found by find, replacing this process.
func helperCmd(use, short string, find func() (string, error)) *cobra.Command {
	return &cobra.Command{
		Use:                use,
		Short:              short,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := find()
			if err != nil {
				return err
			}
			return syscall.Exec(exe, append([]string{exe}, args...), os.Environ())
		},
	}
}

// findLab finds the lab's binary.
func findLab() (string, error) {
	return findHelper(labBinary, "the lab is not installed: %s is neither beside vnetctl nor on PATH (make build puts it in bin/; node releases do not ship it)")
}

// findHelper looks for a helper binary beside this executable first (bin/
// after make build), then on PATH; notFound formats the error naming it.
func findHelper(name, notFound string) (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return "", fmt.Errorf(notFound, name)
		}
		return "", err
	}
	return p, nil
}
