// Command vnetbench runs the benchmarks of lab/bench on an emulated
// Azure VNet and writes the report (make bench).
package main

import (
	"os"

	"github.com/vnetcni/vnetcni/lab/bench"
)

func main() { os.Exit(bench.Main(os.Args)) }
