package agentapi

import "net/netip"

// Commands of the agent's policy host, sent by a plugin that ran ADD or
// DEL itself (no agent served it, or the agent could not see the pod's
// network namespace) while the network has policy on.
const (
	// PolicyEnsureCommand asks the agent to enforce the pod's policies
	// on its address; the answer comes once the kernel does.
	PolicyEnsureCommand = "POLICY-ENSURE"
	// PolicyReleaseCommand tells the agent the address is no longer the
	// pod's.
	PolicyReleaseCommand = "POLICY-RELEASE"
)

// PolicyPod is a pod's attachment as policy needs it: the Kubernetes pod
// (CNI_ARGS K8S_POD_NAMESPACE, K8S_POD_NAME), the address ADD gave it and
// the network mode (bridge mode is enforceable only with bridge
// netfilter).
type PolicyPod struct {
	Namespace string     `json:"namespace"`
	Name      string     `json:"name"`
	IP        netip.Addr `json:"ip"`
	Mode      string     `json:"mode,omitempty"`
}

func (p PolicyPod) String() string { return p.Namespace + "/" + p.Name + " (" + p.IP.String() + ")" }
