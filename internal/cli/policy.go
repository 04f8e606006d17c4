package cli

import (
	"github.com/spf13/cobra"
)

func init() { extraCommands = append(extraCommands, newPolicyCmd) }

// policyBinary holds the policy commands. They link the Kubernetes API
// types and the policy compiler (vnetctl would grow from 9 to 17 MB), so
// "vnetctl policy …" runs vnetctl-policy from beside vnetctl or from PATH.
const policyBinary = "vnetctl-policy"

func newPolicyCmd() *cobra.Command {
	return helperCmd("policy", "Kubernetes network policy: explain a connection (runs "+policyBinary+")", func() (string, error) {
		return findHelper(policyBinary, "%s is neither beside vnetctl nor on PATH (make build puts it in bin/; the release ships it beside vnetctl)")
	})
}
