package cniplugin

import (
	"github.com/vishvananda/netlink"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/store"
)

// kernel is what the CNI verbs need of the node's kernel and of the pod's
// namespace. Production uses hostKernel (a datapath.Host); the unit tests
// a fake that records what was asked of it.
type kernel interface {
	// CheckNetNS verifies that path is a pod's network namespace.
	CheckNetNS(path string) error
	// IfNameFree verifies that ifName does not exist in the pod's namespace.
	IfNameFree(netns, ifName string) error
	// Link finds an interface of the node by name, or the interface of the
	// default route when name is "".
	Link(name string) (netlink.Link, error)

	// NetworkReady is the cheap check that the node-level network (bridge,
	// rules) is in place.
	NetworkReady(r datapath.Rules, b *datapath.Bridge) bool
	// SetUpNetwork builds the node-level network: the bridge (bridge mode,
	// b set) with bridge netfilter, the sysctls, and the rules, with the
	// pods' elements when the rules were lost or damaged (what was damaged
	// is returned, for the log). Idempotent.
	SetUpNetwork(r datapath.Rules, b *datapath.Bridge, saved *store.LinkConfig, persist func(*store.LinkConfig) error, pods []datapath.PodElem) (damage []string, err error)
	// Damage is what the kernel lacks of the network's static rules.
	Damage(r datapath.Rules) ([]string, error)
	// HeldPods lists the pod addresses the network's rules hold.
	HeldPods(r datapath.Rules) ([]datapath.PodElem, error)

	// Add, Del and Check build, remove and verify one attachment.
	Add(ep *datapath.Endpoint, r datapath.Rules) error
	Del(ep *datapath.Endpoint, r datapath.Rules) error
	Check(ep *datapath.Endpoint, r datapath.Rules) error
	// Attachments are the attachments the node's host veths record.
	Attachments() ([]datapath.Attachment, error)
	// Alias is the alias of a node interface ("" when it has none or
	// does not exist).
	Alias(name string) string

	// Host is the real kernel's handles, for what only a real node has
	// (adopting the incumbent's veths, the node's own addresses, another
	// firewall's forward chain); nil on a fake kernel.
	Host() *datapath.Host

	// SetMark times the kernel's steps (AZURE_VNET_TRACE).
	SetMark(func(step string))
	Close()
}
