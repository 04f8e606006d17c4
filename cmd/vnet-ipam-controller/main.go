// Command vnet-ipam-controller is dynamic IP allocation's cluster
// controller: it gives each node's NIC the pod-subnet addresses the node
// asks for in its NodeNetworkConfig, through Azure Resource Manager (see
// internal/ipamcontroller and deploy/ipam-controller.yaml).
package main

import (
	"os"

	"github.com/vnetcni/vnetcni/internal/ipamcontroller"
)

func main() { os.Exit(ipamcontroller.Main(os.Args[1:])) }
