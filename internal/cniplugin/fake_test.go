package cniplugin

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/store"
)

// fakeKernel is a node without a kernel: it keeps the attachments it was
// asked to build and logs every change, in the order asked, the way `ip`
// and `nft` would print them.
type fakeKernel struct {
	log     []string
	atts    map[string]datapath.Attachment // by host veth
	rules   bool                           // the network's rules exist
	failAdd error                          // Add fails with it
	failDel error                          // Del fails with it
}

func newFakeKernel() *fakeKernel { return &fakeKernel{atts: map[string]datapath.Attachment{}} }

func (k *fakeKernel) logf(format string, a ...any) { k.log = append(k.log, fmt.Sprintf(format, a...)) }

func (k *fakeKernel) CheckNetNS(path string) error {
	if path == "" {
		return withKind(errNetNS, errors.New("CNI_NETNS is empty"))
	}
	return nil
}

func (k *fakeKernel) IfNameFree(string, string) error { return nil }

func (k *fakeKernel) Link(name string) (netlink.Link, error) {
	if name == "" || name == "eth0" {
		mac, _ := net.ParseMAC("00:0d:3a:00:00:04")
		return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth0", Index: 2, MTU: 1500, HardwareAddr: mac}}, nil
	}
	return nil, netlink.LinkNotFoundError{}
}

func (k *fakeKernel) NetworkReady(datapath.Rules, *datapath.Bridge) bool { return k.rules }

func (k *fakeKernel) Host() *datapath.Host { return nil }

func (k *fakeKernel) Damage(datapath.Rules) ([]string, error) {
	if !k.rules {
		return []string{"tables missing"}, nil
	}
	return nil, nil
}

func (k *fakeKernel) SetUpNetwork(r datapath.Rules, b *datapath.Bridge, _ *store.LinkConfig, _ func(*store.LinkConfig) error, pods []datapath.PodElem) ([]string, error) {
	if b != nil {
		k.logf("bridge %s master %s", b.Name, b.Master)
	}
	k.logf("program %s %s (%d pods)", datapath.TableName(r.Network), r.Mode, len(pods))
	k.rules = true
	return nil, nil
}

func (k *fakeKernel) HeldPods(datapath.Rules) ([]datapath.PodElem, error) {
	var out []datapath.PodElem
	for _, a := range k.atts {
		out = append(out, datapath.PodElem{HostIf: a.HostIfName, MAC: a.PodMAC, IP: a.IP.Addr()})
	}
	return out, nil
}

func (k *fakeKernel) Add(ep *datapath.Endpoint, r datapath.Rules) error {
	if k.failAdd != nil {
		k.logf("add %s failed", ep.HostIf)
		return k.failAdd
	}
	a := ep.Attachment
	a.HostIfName = ep.HostIf
	k.atts[ep.HostIf] = a
	k.logf("add %s %s", ep.HostIf, ep.IP)
	return nil
}

func (k *fakeKernel) Del(ep *datapath.Endpoint, r datapath.Rules) error {
	if k.failDel != nil {
		return k.failDel
	}
	if _, ok := k.atts[ep.HostIf]; ok {
		delete(k.atts, ep.HostIf)
		k.logf("del %s %s", ep.HostIf, ep.IP)
	} else {
		k.logf("del %s (gone)", ep.HostIf)
	}
	return nil
}

func (k *fakeKernel) Check(ep *datapath.Endpoint, r datapath.Rules) error {
	a, ok := k.atts[ep.HostIf]
	if !ok || a.IP != ep.IP {
		return fmt.Errorf("%s not built as recorded", ep.HostIf)
	}
	return nil
}

func (k *fakeKernel) Attachments() ([]datapath.Attachment, error) {
	var out []datapath.Attachment
	for _, name := range slices.Sorted(maps.Keys(k.atts)) {
		out = append(out, k.atts[name])
	}
	return out, nil
}

func (k *fakeKernel) Alias(name string) string {
	if a, ok := k.atts[name]; ok {
		return a.Alias()
	}
	return ""
}

func (k *fakeKernel) SetMark(func(string)) {}
func (k *fakeKernel) Close()               {}

// testPlugin is azure-vnet on a fake kernel with its state in a temporary
// directory; out collects what the plugin prints.
func testPlugin(t *testing.T, k *fakeKernel) (*Plugin, *strings.Builder) {
	t.Helper()
	out := &strings.Builder{}
	p := &Plugin{
		Name:       "azure-vnet",
		StateDir:   t.TempDir(),
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		Stdout:     out,
		Stderr:     io.Discard,
		Now:        func() time.Time { return time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC) },
		openKernel: func() (kernel, error) { return k, nil },
	}
	return p, out
}
