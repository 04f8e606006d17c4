package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/buildinfo"
	"github.com/vnetcni/vnetcni/internal/netconf"
)

// serve accepts plugin connections until ctx ends or the listener fails.
func (a *Agent) serve(ctx context.Context, ln *net.UnixListener) error {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		go a.handle(c)
	}
}

// handle answers one request. A command, once read, runs to its end even
// when the plugin has gone (a runtime's timeout): it holds locks and
// kernel objects that must end consistent.
func (a *Agent) handle(c *net.UnixConn) {
	defer c.Close()
	var req agentapi.Request
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := agentapi.ReadFrame(c, &req); err != nil {
		a.log.Warn("read request", "err", err)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	resp := a.run(&req)
	if err := agentapi.WriteFrame(c, resp); err != nil {
		a.log.Warn("write response", "cmd", req.Command, "container", req.ContainerID, "err", err)
	}
}

// runner runs one forwarded CNI command and returns its answer
// (cniplugin.Plugin.Serve).
type runner interface {
	Serve(req *agentapi.Request) *agentapi.Response
}

// run executes a request, counting it.
func (a *Agent) run(req *agentapi.Request) *agentapi.Response {
	if req.Command == agentapi.StatusCommand {
		b, _ := json.Marshal(a.status(os.Getpid()))
		return &agentapi.Response{Proto: agentapi.Proto, Version: buildinfo.String(), Stdout: b}
	}
	if req.HostNetNS != "" && req.HostNetNS != a.netns {
		a.log.Warn("request from another network namespace; the plugin runs it itself", "cmd", req.Command, "container", req.ContainerID)
		return &agentapi.Response{Proto: agentapi.Proto, Version: buildinfo.String(), Foreign: true}
	}
	if resp, ok := a.servePolicy(req); ok {
		return resp
	}
	p, ok := a.runners[req.Plugin]
	if !ok {
		return &agentapi.Response{Proto: agentapi.Proto, Version: buildinfo.String(),
			Error: &agentapi.Error{Code: agentapi.CodeMismatch, Msg: fmt.Sprintf("vnetd serves %s and %s, not %q", netconf.PluginType, netconf.IPAMType, req.Plugin)}}
	}
	if resp := a.withPodCIDR(context.Background(), req); resp != nil {
		return resp
	}
	a.sem <- struct{}{}
	start := time.Now()
	resp := p.Serve(req)
	<-a.sem
	a.metrics.observe(req, resp, time.Since(start))
	if resp.Error == nil && req.Command == "ADD" {
		a.learn(req)
	}
	return resp
}

// networkName is the "name" of a network configuration.
func networkName(stdin []byte) (string, bool) {
	var c struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(stdin, &c) != nil || c.Name == "" {
		return "", false
	}
	return c.Name, true
}

// networksFile keeps the configurations the agent learnt from ADDs, so a
// restarted agent reconciles and refreshes before the next ADD.
const networksFile = "vnetd-networks.json"

type savedNetworks struct {
	Main map[string]json.RawMessage `json:"azure-vnet"`
	IPAM map[string]json.RawMessage `json:"azure-vnet-ipam"`
}

func (a *Agent) saveNetworks() error {
	a.saveMu.Lock()
	defer a.saveMu.Unlock()
	a.mu.Lock()
	s := savedNetworks{Main: map[string]json.RawMessage{}, IPAM: map[string]json.RawMessage{}}
	for k, v := range a.networks {
		s.Main[k] = v
	}
	for k, v := range a.ipamNets {
		s.IPAM[k] = v
	}
	a.mu.Unlock()
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	path := filepath.Join(a.cfg.StateDir, networksFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (a *Agent) loadNetworks() error {
	b, err := os.ReadFile(filepath.Join(a.cfg.StateDir, networksFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var s savedNetworks
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, v := range s.Main {
		a.networks[k] = v
	}
	for k, v := range s.IPAM {
		a.ipamNets[k] = v
	}
	return nil
}
