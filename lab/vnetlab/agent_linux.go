package vnetlab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vnetcni/vnetcni/internal/agent"
	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/store"
	"github.com/vnetcni/vnetcni/lab/daemon"
	"github.com/vnetcni/vnetcni/lab/fabric"
)

// AgentBinary is the node agent the lab runs on every VM.
const AgentBinary = "vnetd"

// agentDaemon is a VM's vnetd: recognised by its --state-dir, which only
// that VM's agent has.
func (l *Lab) agentDaemon(vm string) daemon.Daemon {
	return daemon.Daemon{
		Name:    "vnetd on " + vm,
		PIDFile: filepath.Join(l.VMDir(vm), "vnetd.pid"),
		Marker:  "--state-dir=" + l.StateDir(vm),
	}
}

// startAgents starts one vnetd per VM that carries pods, inside the VM's
// namespace with the VM's state directory, as a node runs it (metrics on
// the VM's own 127.0.0.1). Agents already running are left alone.
func (l *Lab) startAgents(ctx context.Context, binDir string) error {
	bin, err := filepath.Abs(filepath.Join(binDir, AgentBinary))
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("node agent missing: %w (build it with: make build, or pass --no-agent)", err)
	}
	for _, v := range l.Nodes() {
		d := l.agentDaemon(v.Name)
		vmNS := netns.Path(fabric.Open(l.Spec).VMNetNS(v.Name))
		if pid, ok := d.Running(); ok {
			if sameNetNS(pid, vmNS) {
				continue
			}
			// The VM's namespace was made anew (up repairing a damaged
			// lab): its agent serves the old one.
			if err := d.Stop(5 * time.Second); err != nil {
				return err
			}
		}
		env := []string{store.EnvDir + "=" + l.StateDir(v.Name), "AZURE_VNET_LOG_FILE=" + filepath.Join(l.VMDir(v.Name), "azure-vnet.log")}
		args := []string{"--state-dir=" + l.StateDir(v.Name), "--http=" + agent.DefaultHTTPAddr}
		if l.policyOn() {
			args = append(args, "--network-policy", "--kubeconfig="+l.Kubernetes.AgentKubeconfig(v.Name), "--node-name="+v.Name)
		}
		if _, err := d.Start(vmNS, env, filepath.Join(l.VMDir(v.Name), "vnetd.log"), bin, args...); err != nil {
			return err
		}
	}
	// Ready when each answers on its socket.
	deadline := time.Now().Add(10 * time.Second)
	for _, v := range l.Nodes() {
		for {
			if _, err := agentapi.GetStatus(l.StateDir(v.Name)); err == nil {
				break
			} else if time.Now().After(deadline) || ctx.Err() != nil {
				log, _ := os.ReadFile(filepath.Join(l.VMDir(v.Name), "vnetd.log"))
				return fmt.Errorf("vnetd on %s did not answer: %w\n%s", v.Name, err, log)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// stopAgents ends every VM's vnetd.
func (l *Lab) stopAgents() error {
	var errs []error
	for _, v := range l.Nodes() {
		if err := l.agentDaemon(v.Name).Stop(5 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("stop agents: %v", errs)
	}
	return nil
}

// sameNetNS reports whether process pid runs in the network namespace
// mounted at path.
func sameNetNS(pid int, path string) bool {
	var a, b syscall.Stat_t
	if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &a) != nil || syscall.Stat(path, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}
