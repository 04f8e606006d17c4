package doctor

import (
	"errors"
	"net"
	"net/netip"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/store"
)

// TestDiagnoseTable compares synthetic snapshots: what each difference
// looks like, and what is not one.
func TestDiagnoseTable(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 10}
	ip := netip.MustParseAddr("10.0.0.10")
	hostIf := datapath.HostIfName("a", "eth0")
	att := datapath.Attachment{Mode: datapath.ModeBridge, ContainerID: "a", IfName: "eth0", Network: "azure",
		IP: netip.PrefixFrom(ip, 24), PodMAC: mac, HostIfName: hostIf}
	healthyState := func() *store.State {
		st := store.NewState()
		st.Networks["azure"] = &store.Network{Name: "azure", Mode: datapath.ModeBridge, Pool: "P"}
		st.Pools["P"] = &store.Pool{ID: "P", Addresses: []netip.Addr{ip}}
		st.Allocations[ip.String()] = &store.Allocation{IP: ip, Pool: "P", ContainerID: "a", IfName: "eth0", Network: "azure", Owner: "azure-vnet"}
		st.Endpoints["a/eth0"] = &store.Endpoint{ContainerID: "a", IfName: "eth0", Network: "azure", Mode: datapath.ModeBridge,
			HostIfName: hostIf, PodMAC: mac.String(), IP: att.IP}
		return st
	}
	healthyKernel := func() *Kernel {
		k := &Kernel{
			Veths:  map[string]*Veth{hostIf: {Name: hostIf, Labeled: true, Att: att}},
			Tables: map[string]*Tables{"azure": {Mode: datapath.ModeBridge, Present: true, Elems: datapath.PodElements(datapath.ModeBridge, datapath.PodElem{HostIf: hostIf, IP: ip, MAC: mac})}},
			Modes:  map[string]string{"azure": datapath.ModeBridge},
		}
		k.BridgeNetfilter.Loaded, k.BridgeNetfilter.On = true, true
		return k
	}
	for _, tc := range []struct {
		name string
		edit func(s *Snapshot)
		want []string
	}{
		{"healthy", func(*Snapshot) {}, []string{}},
		{"held lock files and damaged copies are not findings", func(s *Snapshot) {
			s.Files = []string{store.FileName, store.LockName, store.FileName + ".damaged-1", store.AttachmentLockName("a", "eth0")}
		}, []string{}},
		{"a pods element mapping to another MAC is a missing element, not a stale one", func(s *Snapshot) {
			for i, e := range s.Kernel.Tables["azure"].Elems {
				if e.Set == datapath.SetPods {
					s.Kernel.Tables["azure"].Elems[i].MAC = net.HardwareAddr{2, 0, 0, 0, 0, 99}
				}
			}
		}, []string{"missing-element a/eth0"}},
		{"tables gone with live pods", func(s *Snapshot) {
			s.Kernel.Tables["azure"] = &Tables{Mode: datapath.ModeBridge}
		}, []string{"missing-rules " + datapath.TableName("azure")}},
		{"rules flushed, tables kept", func(s *Snapshot) {
			s.Kernel.Tables["azure"].Damage = []string{"chain bridge azure-vnet-azure postrouting has 0 rules, want 6"}
		}, []string{"missing-rules " + datapath.TableName("azure")}},
		{"the node holds a pod's address", func(s *Snapshot) {
			s.Kernel.NodeAddrs = map[netip.Addr]NodeAddr{netip.MustParseAddr("10.0.0.10"): {Link: "eth0", Prefix: netip.MustParsePrefix("10.0.0.10/24")}}
		}, []string{"node-holds-pod-address 10.0.0.10"}},
		{"br_netfilter not loaded", func(s *Snapshot) {
			s.Kernel.BridgeNetfilter.Loaded, s.Kernel.BridgeNetfilter.On = false, false
		}, []string{"br-netfilter-off br_netfilter"}},
		{"tables gone without pods are fine", func(s *Snapshot) {
			s.State = store.NewState()
			s.Kernel = &Kernel{Veths: map[string]*Veth{}, Tables: map[string]*Tables{"azure": {Mode: datapath.ModeBridge}}}
		}, []string{}},
		{"the IPAM plugin's allocations belong to other plugins", func(s *Snapshot) {
			s.State.Allocations["10.0.0.11"] = &store.Allocation{IP: netip.MustParseAddr("10.0.0.11"), ContainerID: "b", IfName: "net1", Owner: "azure-vnet-ipam"}
		}, []string{}},
		{"an allocation of a container with a veth but no endpoint is recorded, not released", func(s *Snapshot) {
			delete(s.State.Endpoints, "a/eth0")
		}, []string{"unrecorded-attachment a/eth0"}},
		{"damaged state", func(s *Snapshot) {
			s.State, s.StateErr = nil, &store.DamagedError{Path: store.FileName, Reason: "empty"}
		}, []string{"state-damaged state.json", "unrecorded-attachment a/eth0"}},
		{"address gone from the NIC", func(s *Snapshot) {
			s.State.Pools["P"].Addresses = nil
		}, []string{"outside-pool 10.0.0.10"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Snapshot{State: healthyState(), Kernel: healthyKernel()}
			tc.edit(s)
			if d := cmp.Diff(tc.want, lines(Diagnose(s))); d != "" {
				t.Errorf("findings (-want +got):\n%s", d)
			}
		})
	}
}

func TestKinds(t *testing.T) {
	for _, k := range []Kind{OutsidePool} {
		if k.Fixable() || k.Garbage() {
			t.Errorf("%s: fixable %t, garbage %t; want neither", k, k.Fixable(), k.Garbage())
		}
	}
	for _, k := range []Kind{UnrecordedAttachment, DuplicateAddress, Mismatch, MissingElement, MissingRoute, StateDamaged, MissingRules, ForwardingOff} {
		if !k.Fixable() || k.Garbage() {
			t.Errorf("%s: fixable %t, garbage %t; want a fixable repair that is not garbage", k, k.Fixable(), k.Garbage())
		}
	}
	if err := errors.New("x"); (&Finding{Kind: TempFile, Subject: "f", Detail: err.Error()}).String() != "temp-file f: x" {
		t.Errorf("Finding.String without a network")
	}
}

// lines are findings as sorted "kind subject" lines.
func lines(fs []*Finding) []string {
	out := []string{}
	for _, f := range fs {
		out = append(out, string(f.Kind)+" "+f.Subject)
	}
	sort.Strings(out)
	return out
}
