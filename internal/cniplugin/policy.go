package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/buildinfo"
	"github.com/vnetcni/vnetcni/internal/netconf"
)

// PolicyHost enforces Kubernetes network policy for the pods ADD builds:
// the agent's engine when the command runs in vnetd, the agent over its
// socket when it runs in a plugin process.
type PolicyHost interface {
	// EnsurePod returns once the kernel enforces the pod's policies on
	// its address (and knows the address as a peer).
	EnsurePod(ctx context.Context, pod agentapi.PolicyPod) error
	// ReleasePod forgets an address EnsurePod gave the pod.
	ReleasePod(pod agentapi.PolicyPod)
}

// PolicyTimeout bounds how long ADD waits for the pod's policy to be in
// the kernel before failing (retryably).
const PolicyTimeout = 30 * time.Second

// errPolicy marks failures to enforce policy: ADD fails with "try again
// later" (CNI code 11), the runtime retries, the pod never starts open.
var errPolicy = errors.New("network policy not enforced")

// policyHost is who enforces policy for a command on network conf, or nil
// when nobody needs to: the agent's engine (set on the agent's plugin)
// whenever the agent hosts policy; otherwise the agent over its socket when
// the network has networkPolicy on, failing closed if it does not answer.
func (p *Plugin) policyHost(conf *netconf.NetConf) PolicyHost {
	if p.Policy != nil {
		return p.Policy
	}
	if conf.NetworkPolicy {
		return &remotePolicy{p: p}
	}
	return nil
}

// ensurePolicy enforces the pod's policies on ip before ADD wires the pod,
// so its first packet already meets them. Pods without a Kubernetes
// identity (no K8S_POD_NAMESPACE/K8S_POD_NAME: podman, containerd without
// kubelet) are selected by no policy and need nothing. The returned undo
// releases the address again if ADD fails later.
func (p *Plugin) ensurePolicy(conf *netconf.NetConf, pa podArgs, ip netip.Addr) (undo func(), err error) {
	host := p.policyHost(conf)
	if host == nil || pa.Namespace == "" || pa.Name == "" {
		return func() {}, nil
	}
	pod := agentapi.PolicyPod{Namespace: pa.Namespace, Name: pa.Name, IP: ip, Mode: conf.Mode}
	ctx, cancel := context.WithTimeout(context.Background(), PolicyTimeout)
	defer cancel()
	if err := host.EnsurePod(ctx, pod); err != nil {
		host.ReleasePod(pod)
		return nil, withKind(errPolicy, fmt.Errorf("enforce network policy for pod %s: %w", pod, err))
	}
	return func() { host.ReleasePod(pod) }, nil
}

// releasePolicy tells the policy host a pod's address is gone (DEL). Best
// effort: an agent that does not hear it forgets the address when the pod
// leaves the API.
func (p *Plugin) releasePolicy(conf *netconf.NetConf, namespace, name string, ip netip.Addr) {
	host := p.policyHost(conf)
	if host == nil || namespace == "" || name == "" || !ip.IsValid() {
		return
	}
	host.ReleasePod(agentapi.PolicyPod{Namespace: namespace, Name: name, IP: ip, Mode: conf.Mode})
}

// remotePolicy asks vnetd, over its socket, to enforce policy for a
// command the plugin ran itself.
type remotePolicy struct{ p *Plugin }

// ErrNoPolicyAgent is the cause when policy is on and no agent answers.
var ErrNoPolicyAgent = errors.New("networkPolicy is on for this network but vnetd is not reachable; not starting the pod unprotected (retry once vnetd runs)")

func (r *remotePolicy) call(cmd string, pod agentapi.PolicyPod) error {
	resp, err := agentapi.Call(agentapi.SocketPath(r.p.StateDir), &agentapi.Request{
		Plugin: r.p.Name, Version: buildinfo.String(), Command: cmd, Pod: &pod, HostNetNS: agentapi.NetNSID(),
	})
	switch {
	case errors.Is(err, agentapi.ErrNoAgent):
		return ErrNoPolicyAgent
	case err != nil:
		return fmt.Errorf("%w: %w", ErrNoPolicyAgent, err)
	case resp.Foreign:
		return fmt.Errorf("%w: the agent serves another network namespace", ErrNoPolicyAgent)
	case resp.Error != nil:
		return errors.New(resp.Error.Msg)
	}
	return nil
}

func (r *remotePolicy) EnsurePod(_ context.Context, pod agentapi.PolicyPod) error {
	return r.call(agentapi.PolicyEnsureCommand, pod)
}

func (r *remotePolicy) ReleasePod(pod agentapi.PolicyPod) {
	_ = r.call(agentapi.PolicyReleaseCommand, pod)
}
