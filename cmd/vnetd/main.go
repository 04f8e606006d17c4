// Command vnetd is the node agent of azure-vnet: it serves the CNI plugins
// over a unix socket, keeps address pools fresh, repairs the datapath and
// exports metrics (see docs/agent.md).
package main

import (
	"os"

	"github.com/vnetcni/vnetcni/internal/agent"
)

func main() { os.Exit(agent.Main(os.Args[1:])) }
