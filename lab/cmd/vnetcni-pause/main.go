// vnetcni-pause is the sandbox ("pause") process of the images the runtime
// tests build locally: it holds the pod's namespaces open, reaps orphans
// (it is PID 1), and exits 0 on SIGTERM or SIGINT. Built static
// (CGO_ENABLED=0) so the image needs no other file.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
