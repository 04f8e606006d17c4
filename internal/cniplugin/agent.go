package cniplugin

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/buildinfo"
	"github.com/vnetcni/vnetcni/internal/netconf"
)

// EnvAgent set to "off" makes the plugins work on their own even when
// vnetd runs (for debugging and for comparing the two paths).
const EnvAgent = "AZURE_VNET_AGENT"

// viaAgent forwards a command to vnetd when it runs on the node. handled
// is false when no agent answers: no socket, a socket nobody listens on,
// or an agent that went away mid-call. The command then runs standalone,
// which is safe in every case because the agent runs the same code under
// the same state file and locks: an interrupted ADD is found and rebuilt
// by the next, DEL and GC are idempotent, CHECK and STATUS only read.
func (p *Plugin) viaAgent(verb string, args *skel.CmdArgs) (handled bool, err error) {
	if os.Getenv(EnvAgent) == "off" {
		return false, nil
	}
	resp, err := agentapi.Call(agentapi.SocketPath(p.StateDir), &agentapi.Request{
		Plugin: p.Name, Version: buildinfo.String(), Command: verb, Trace: p.Trace,
		ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName, Args: args.Args, Path: args.Path,
		Stdin: args.StdinData, HostNetNS: agentapi.NetNSID(),
	})
	if err != nil {
		if p.Trace && !errors.Is(err, agentapi.ErrNoAgent) {
			fmt.Fprintf(p.Stderr, "%s: %v; running standalone\n", p.Name, err)
		}
		return false, nil
	}
	if resp.Foreign {
		if p.Trace {
			fmt.Fprintf(p.Stderr, "%s: the agent serves another network namespace; running standalone\n", p.Name)
		}
		return false, nil
	}
	if resp.Proto != agentapi.Proto {
		// An agent of another protocol that did not refuse the request
		// itself: its answer may mean something else; say so.
		return true, &types.Error{Code: agentapi.CodeMismatch, Msg: fmt.Sprintf("%s %s speaks agent protocol %d, vnetd %s answered in %d: install plugins and agent of one release",
			p.Name, buildinfo.String(), agentapi.Proto, resp.Version, resp.Proto)}
	}
	if resp.Trace != "" {
		fmt.Fprint(p.Stderr, resp.Trace)
	}
	if resp.Error != nil && resp.Error.Code == types.ErrInvalidNetNS {
		// The agent resolves CNI_NETNS in its own mount namespace, which
		// may not see the runtime's (a DaemonSet without the host's
		// /var/run/netns, or a runtime in a private mount namespace):
		// this process sees what the runtime meant.
		return false, nil
	}
	if resp.Error != nil {
		return true, &types.Error{Code: resp.Error.Code, Msg: resp.Error.Msg, Details: resp.Error.Details}
	}
	_, err = p.Stdout.Write(resp.Stdout)
	return true, err
}

// Serve runs a command forwarded by a plugin in this process (the agent's),
// exactly as the plugin would have run it, and returns its answer.
func (p *Plugin) Serve(req *agentapi.Request) *agentapi.Response {
	resp := &agentapi.Response{Proto: agentapi.Proto, Version: buildinfo.String()}
	if req.Proto != agentapi.Proto {
		resp.Error = agentapi.MismatchError(req, resp.Version)
		return resp
	}
	// A copy per command, so its results and trace go to this answer;
	// the verbs are bound to the copy.
	q := *p
	var out, trace bytes.Buffer
	q.Trace = req.Trace
	q.Stderr = &trace
	q.Stdout = &out
	fn := q.verbs()[req.Command]
	if fn == nil {
		resp.Error = &agentapi.Error{Code: uint(types.ErrInvalidEnvironmentVariables), Msg: fmt.Sprintf("%s: unknown CNI_COMMAND %q", p.Name, req.Command)}
		return resp
	}
	args := &skel.CmdArgs{ContainerID: req.ContainerID, Netns: req.Netns, IfName: req.IfName, Args: req.Args, Path: req.Path, StdinData: req.Stdin}
	err := q.run(req.Command, fn, args)
	resp.Trace = trace.String()
	if err != nil {
		var te *types.Error
		if !errors.As(err, &te) {
			te = types.NewError(types.ErrInternal, err.Error(), "")
		}
		resp.Error = &agentapi.Error{Code: te.Code, Msg: te.Msg, Details: te.Details}
		return resp
	}
	resp.Stdout = out.Bytes()
	return resp
}

// verbs are the commands this plugin serves: azure-vnet's, or
// azure-vnet-ipam's when New was given its name.
func (p *Plugin) verbs() map[string]func(*skel.CmdArgs, *tracer) error {
	if p.Name == netconf.IPAMType {
		return map[string]func(*skel.CmdArgs, *tracer) error{
			"ADD": p.ipamAdd, "DEL": p.ipamDel, "CHECK": p.ipamCheck, "GC": p.ipamGC, "STATUS": p.status,
		}
	}
	return map[string]func(*skel.CmdArgs, *tracer) error{
		"ADD": p.add, "DEL": p.del, "CHECK": p.check, "GC": p.gc, "STATUS": p.status,
	}
}
