package cniplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/ipam"
	"github.com/vnetcni/vnetcni/internal/store"
)

// conf is a static-pool network: three pod addresses.
func conf(cniVersion, mode string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion": %q, "name": "azure", "type": "azure-vnet", "mode": %q,
  "ipam": {"type": "azure-vnet-ipam", "environment": "static", "subnet": "10.0.0.0/24",
           "primaryIP": "10.0.0.4", "addresses": ["10.0.0.5", "10.0.0.6", "10.0.0.7"]}}`, cniVersion, mode))
}

func cmdArgs(id string, stdin []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: id, Netns: "/var/run/netns/" + id, IfName: "eth0", StdinData: stdin,
		Args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + id}
}

func readState(t *testing.T, p *Plugin) *store.State {
	t.Helper()
	st, err := store.New(p.StateDir).Read()
	if err != nil {
		t.Fatalf("read state: %v", err)
	}
	return st
}

// TestAddResultPerVersion: ADD answers in the version the runtime asked
// for, with the fields that version has: 0.3.x and 0.4.0 name the IP
// version and interface index, 1.x drop "version"; the pod interface
// carries the sandbox; the gateway is the subnet's (bridge) or 169.254.1.1
// (transparent).
func TestAddResultPerVersion(t *testing.T) {
	for _, mode := range []string{datapath.ModeBridge, datapath.ModeTransparent} {
		for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
			t.Run(mode+"/"+v, func(t *testing.T) {
				p, out := testPlugin(t, newFakeKernel())
				if err := p.Funcs().Add(cmdArgs("c1", conf(v, mode))); err != nil {
					t.Fatalf("ADD: %v", err)
				}
				var res struct {
					CNIVersion string `json:"cniVersion"`
					Interfaces []struct {
						Name, Mac, Sandbox string
					}
					IPs []struct {
						Version   string `json:"version"`
						Address   string
						Gateway   string
						Interface *int
					}
					Routes []struct{ Dst, GW string }
				}
				if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
					t.Fatalf("result %q: %v", out, err)
				}
				if res.CNIVersion != v {
					t.Errorf("cniVersion %q, want %q", res.CNIVersion, v)
				}
				wantVersion := ""
				if strings.HasPrefix(v, "0.") {
					wantVersion = "4"
				}
				wantGW := "10.0.0.1"
				if mode == datapath.ModeTransparent {
					wantGW = datapath.TransparentGateway.String()
				}
				if len(res.IPs) != 1 || res.IPs[0].Address != "10.0.0.5/24" || res.IPs[0].Gateway != wantGW || res.IPs[0].Version != wantVersion {
					t.Errorf("ips %+v, want 10.0.0.5/24 via %s (version %q)", res.IPs, wantGW, wantVersion)
				}
				if ip := res.IPs[0]; ip.Interface == nil || *ip.Interface >= len(res.Interfaces) || res.Interfaces[*ip.Interface].Sandbox == "" {
					t.Errorf("ip's interface %v does not point at the pod's interface in %+v", ip.Interface, res.Interfaces)
				}
			})
		}
	}
}

// TestAddRollsBack: when the kernel side fails, the address and the
// endpoint record are given back; nothing is left for DEL or GC.
func TestAddRollsBack(t *testing.T) {
	k := newFakeKernel()
	p, _ := testPlugin(t, k)
	k.failAdd = errors.New("veth: file exists")
	err := p.Funcs().Add(cmdArgs("c1", conf("1.0.0", datapath.ModeBridge)))
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrInternal || !strings.Contains(te.Msg, "veth: file exists") {
		t.Fatalf("ADD with a failing kernel: %v, want code 999 with the cause", err)
	}
	st := readState(t, p)
	if len(st.Allocations) != 0 || len(st.Endpoints) != 0 {
		t.Errorf("after the failed ADD: allocations %v, endpoints %v; want none", st.Allocations, st.Endpoints)
	}
	for _, pool := range st.Pools {
		if free := ipam.Free(st, pool); len(free) != 3 {
			t.Errorf("after the failed ADD: free %v, want all 3 addresses", free)
		}
	}
	if len(k.atts) != 0 {
		t.Errorf("after the failed ADD the kernel holds %v", k.atts)
	}
}

// TestDelIdempotent: DEL after ADD removes the veth and releases the
// address; DEL again, and DEL of what was never added, succeed and change
// nothing.
func TestDelIdempotent(t *testing.T) {
	k := newFakeKernel()
	p, _ := testPlugin(t, k)
	c := conf("1.0.0", datapath.ModeBridge)
	if err := p.Funcs().Add(cmdArgs("c1", c)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := p.Funcs().Del(cmdArgs("c1", c)); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	if err := p.Funcs().Del(cmdArgs("never", c)); err != nil {
		t.Errorf("DEL of a container never added: %v", err)
	}
	hostIf := datapath.HostIfName("c1", "eth0")
	got := k.log
	wantLog := []string{
		fmt.Sprintf("program %s %s (0 pods)", datapath.TableName("azure"), datapath.ModeBridge),
		"add " + hostIf + " 10.0.0.5/24",
		"del " + hostIf + " 10.0.0.5/24",
		"del " + hostIf + " (gone)",
		"del " + datapath.HostIfName("never", "eth0") + " (gone)",
	}
	if d := cmp.Diff(wantLog, got[1:]); d != "" || !strings.HasPrefix(got[0], "bridge ") {
		t.Errorf("kernel calls (-want +got):\n%s\nfirst: %s", d, got[0])
	}
	st := readState(t, p)
	if len(st.Allocations) != 0 || len(st.Endpoints) != 0 {
		t.Errorf("after DEL: allocations %v, endpoints %v; want none", st.Allocations, st.Endpoints)
	}
}

// TestDelWithoutStateUsesTheAlias: a DEL after the state was lost finds
// the address in the host veth's alias, so the pod's elements go too.
func TestDelWithoutStateUsesTheAlias(t *testing.T) {
	k := newFakeKernel()
	p, _ := testPlugin(t, k)
	c := conf("1.0.0", datapath.ModeTransparent)
	if err := p.Funcs().Add(cmdArgs("c1", c)); err != nil {
		t.Fatal(err)
	}
	if err := store.New(p.StateDir).Update(func(st *store.State) error {
		*st = *store.NewState()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := p.Funcs().Del(cmdArgs("c1", c)); err != nil {
		t.Fatal(err)
	}
	if last := k.log[len(k.log)-1]; last != "del "+datapath.HostIfName("c1", "eth0")+" 10.0.0.5/24" {
		t.Errorf("DEL without state: %q, want the veth removed with its address", last)
	}
}

// TestGCSelection: GC removes every attachment of its network that the
// runtime does not list, whether the state or only the kernel knows it,
// and leaves other networks alone.
func TestGCSelection(t *testing.T) {
	k := newFakeKernel()
	p, _ := testPlugin(t, k)
	c := conf("1.1.0", datapath.ModeBridge)
	for _, id := range []string{"keep", "stale"} {
		if err := p.Funcs().Add(cmdArgs(id, c)); err != nil {
			t.Fatal(err)
		}
	}
	// A veth the state forgot, and another network's attachment.
	orphan := datapath.Attachment{Mode: datapath.ModeBridge, ContainerID: "orphan", IfName: "eth0", Network: "azure",
		HostIfName: datapath.HostIfName("orphan", "eth0")}
	other := datapath.Attachment{Mode: datapath.ModeBridge, ContainerID: "other", IfName: "eth0", Network: "other",
		HostIfName: datapath.HostIfName("other", "eth0")}
	k.atts[orphan.HostIfName], k.atts[other.HostIfName] = orphan, other

	var gc map[string]any
	_ = json.Unmarshal(c, &gc)
	gc["cni.dev/valid-attachments"] = []map[string]string{{"containerID": "keep", "ifname": "eth0"}}
	b, _ := json.Marshal(gc)
	if err := p.Funcs().GC(&skel.CmdArgs{StdinData: b}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	var left []string
	for _, a := range k.atts {
		left = append(left, a.ContainerID)
	}
	if d := cmp.Diff([]string{"keep", "other"}, slices.Sorted(slices.Values(left))); d != "" {
		t.Errorf("attachments after GC (-want +got):\n%s", d)
	}
	st := readState(t, p)
	if _, ok := st.AllocationFor("stale", "eth0"); ok {
		t.Error("GC left stale's address allocated")
	}
	if _, ok := st.AllocationFor("keep", "eth0"); !ok {
		t.Error("GC released keep's address")
	}
}

// TestStatusAnswers: STATUS is healthy while the pool is known, a full
// pool included (ADD then says "try again later"); it fails with 50 only
// when the node cannot network pods (no NIC).
func TestStatusAnswers(t *testing.T) {
	k := newFakeKernel()
	p, _ := testPlugin(t, k)
	c := conf("1.1.0", datapath.ModeBridge)
	status := func() error { return p.Funcs().Status(&skel.CmdArgs{StdinData: c}) }
	if err := status(); err != nil {
		t.Fatalf("STATUS on a new node: %v", err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if err := p.Funcs().Add(cmdArgs(id, c)); err != nil {
			t.Fatal(err)
		}
	}
	if err := status(); err != nil {
		t.Errorf("STATUS with the pool used up: %v, want healthy", err)
	}
	err := p.Funcs().Add(cmdArgs("d", c))
	var te *types.Error
	var ex *ipam.ExhaustedError
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
		t.Errorf("ADD with the pool used up: %v (%v), want code 11", err, errors.As(err, &ex))
	}
	noNIC := []byte(strings.Replace(string(c), `"mode"`, `"master": "eth9", "mode"`, 1))
	err = p.Funcs().Status(&skel.CmdArgs{StdinData: noNIC})
	if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable {
		t.Errorf("STATUS without the NIC: %v, want code 50", err)
	}
}

// TestToCNIError maps each kind of failure to its CNI code.
func TestToCNIError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code uint
	}{
		{&ipam.ExhaustedError{Pool: "P"}, types.ErrTryAgainLater},
		{fmt.Errorf("allocate: %w", store.ErrLockTimeout), types.ErrTryAgainLater},
		{withKind(errSource, errors.New("wireserver: timeout")), types.ErrTryAgainLater},
		{withKind(errNetNS, errors.New("CNI_NETNS is empty")), types.ErrInvalidNetNS},
		{withKind(errArgs, errors.New("bad")), types.ErrInvalidEnvironmentVariables},
		{types.NewError(types.ErrPluginNotAvailable, "x", ""), types.ErrPluginNotAvailable},
		{errors.New("anything else"), types.ErrInternal},
	} {
		var te *types.Error
		if !errors.As(toCNIError(tc.err), &te) || te.Code != tc.code {
			t.Errorf("toCNIError(%v) = %v, want code %d", tc.err, te, tc.code)
		} else if !strings.Contains(te.Msg, tc.err.Error()) && te.Msg != "x" {
			t.Errorf("toCNIError(%v) message %q lost the cause", tc.err, te.Msg)
		}
	}
}

func TestParseArgs(t *testing.T) {
	a, err := parseArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1")
	if err != nil || a != (podArgs{Namespace: "ns", Name: "web", InfraID: "abc", UID: "u1"}) {
		t.Errorf("parseArgs = %+v, %v", a, err)
	}
	for _, bad := range []string{"novalue", "=x", "K8S_POD_NAME"} {
		if _, err := parseArgs(bad); !errors.Is(err, errArgs) {
			t.Errorf("parseArgs(%q) = %v, want an errArgs error", bad, err)
		}
	}
}
