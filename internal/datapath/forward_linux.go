package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/vnetcni/vnetcni/internal/nft"
)

// Another firewall's forward chain. Docker sets `iptables -P FORWARD DROP`;
// with iptables-nft that is this nftables chain with a drop policy, and a
// packet it drops is dropped whatever the network's own tables accept. Pod
// traffic is forwarded by the node (and, with br_netfilter, bridged traffic
// passes the forward hook too), so the network inserts accepts for its pods
// at the top of that chain, as the CNI firewall plugin and flannel do, each
// tagged with a comment naming the network; iptables-nft lists them as
// `-m comment --comment "azure-vnet NETWORK"`. The legacy (x_tables)
// backend's chain gets the same accepts (legacy_linux.go).
const (
	foreignFilterTable  = "filter"
	foreignForwardChain = "FORWARD"
)

// forwardComment tags the network's rules in a foreign chain.
func forwardComment(network string) string { return "azure-vnet " + network }

// foreignForward returns the ip filter FORWARD chain when its policy
// drops, nil otherwise.
func foreignForward(c *nftables.Conn) (*nftables.Chain, error) {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list ip chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name == foreignFilterTable && ch.Name == foreignForwardChain && ch.Hooknum != nil &&
			*ch.Hooknum == *nftables.ChainHookForward && ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
			return ch, nil
		}
	}
	return nil, nil
}

// forwardRules are the accepts for the network's pods: in bridge mode, what
// comes from and goes to the pool's subnet through the bridge; in
// transparent mode, what comes from and goes to a host veth.
func (r Rules) forwardRules(ch *nftables.Chain) []*nftables.Rule {
	ud := userdata.AppendString(nil, userdata.TypeComment, forwardComment(r.Network))
	var in, out [][]expr.Any
	if r.Mode == ModeBridge {
		in = [][]expr.Any{nft.IIFName(r.Bridge, true), ipPrefix(12, r.Subnet)}
		out = [][]expr.Any{nft.OIFName(r.Bridge, true), ipPrefix(16, r.Subnet)}
	} else {
		in = [][]expr.Any{nft.IIFName(HostIfPrefix+"*", true)}
		out = [][]expr.Any{nft.OIFName(HostIfPrefix+"*", true)}
	}
	var rules []*nftables.Rule
	for _, m := range [][][]expr.Any{in, out} {
		rl := nft.Rule(ch, append(m, nft.Counter(), nft.Accept())...)
		rl.UserData = ud
		rules = append(rules, rl)
	}
	return rules
}

// ipPrefix matches the IPv4 address at offset off of the network header
// against a prefix, as iptables-nft encodes -s/-d. Equivalent to: ip saddr
// 10.0.0.0/24 (offset 12) or ip daddr 10.0.0.0/24 (offset 16).
func ipPrefix(off uint32, p netip.Prefix) []expr.Any {
	a := p.Masked().Addr().As4()
	m := make([]byte, 4)
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
	}
}

// ours lists the network's rules in a chain.
func (r Rules) forwardOurs(c *nftables.Conn, ch *nftables.Chain) ([]*nftables.Rule, error) {
	rules, err := c.GetRules(ch.Table, ch)
	if err != nil {
		return nil, fmt.Errorf("list rules of ip %s %s: %w", ch.Table.Name, ch.Name, err)
	}
	var out []*nftables.Rule
	for _, rl := range rules {
		if s, ok := userdata.GetString(rl.UserData, userdata.TypeComment); ok && s == forwardComment(r.Network) {
			out = append(out, rl)
		}
	}
	return out, nil
}

// ForwardAcceptMissing reports whether a foreign forward chain drops by
// policy and lacks the network's accepts.
func (r Rules) ForwardAcceptMissing(c *nftables.Conn) (bool, error) {
	ch, err := foreignForward(c)
	if err != nil {
		return false, err
	}
	if ch != nil {
		ours, err := r.forwardOurs(c, ch)
		if err != nil {
			return false, err
		}
		if len(ours) != len(r.forwardRules(ch)) {
			return true, nil
		}
	}
	var missing bool
	err = inNFTNamespace(c, func() (err error) {
		missing, err = r.legacyForwardMissing()
		return err
	})
	return missing, err
}

// EnsureForwardAccept puts the network's accepts at the top of a foreign
// forward chain that drops by policy (replacing an incomplete set of them),
// nftables' and the legacy backend's. Nothing is done when there is no such
// chain. Idempotent.
func (r Rules) EnsureForwardAccept(c *nftables.Conn) error {
	if err := inNFTNamespace(c, r.ensureLegacyForward); err != nil {
		return err
	}
	ch, err := foreignForward(c)
	if err != nil || ch == nil {
		return err
	}
	ours, err := r.forwardOurs(c, ch)
	if err != nil {
		return err
	}
	want := r.forwardRules(ch)
	if len(ours) == len(want) {
		return nil
	}
	for _, rl := range ours {
		if err := c.DelRule(rl); err != nil {
			return err
		}
	}
	for i := len(want) - 1; i >= 0; i-- {
		c.InsertRule(want[i])
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("accept pod traffic in ip %s %s: %w", ch.Table.Name, ch.Name, err)
	}
	return nil
}

// RemoveForwardAccept deletes the network's accepts from the foreign
// forward chain, whatever its policy now, and from the legacy backend's.
// Equivalent to: nft delete rule ip filter FORWARD handle N, for each rule
// commented "azure-vnet NETWORK".
func (r Rules) RemoveForwardAccept(c *nftables.Conn) error {
	errs := []error{inNFTNamespace(c, r.removeLegacyForward)}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list ip chains: %w", err))...)
	}
	for _, ch := range chains {
		if ch.Table.Name != foreignFilterTable || ch.Name != foreignForwardChain {
			continue
		}
		ours, err := r.forwardOurs(c, ch)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rl := range ours {
			errs = append(errs, c.DelRule(rl))
		}
		if len(ours) > 0 {
			if err := c.Flush(); err != nil && !isNotFound(err) {
				errs = append(errs, fmt.Errorf("remove the accepts of %s from ip %s %s: %w", r.Network, ch.Table.Name, ch.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}
