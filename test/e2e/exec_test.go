package e2e

import (
	"os/exec"

	"github.com/vnetcni/vnetcni/internal/netns"
)

// runIn runs a command inside a namespace (tests only; the code under test
// never spawns processes).
func runIn(ns string, args ...string) ([]byte, error) {
	return exec.Command("nsenter", append([]string{"--net=" + netns.Path(ns), "--"}, args...)...).CombinedOutput()
}
