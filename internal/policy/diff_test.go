package policy

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	netv1 "k8s.io/api/networking/v1"

	"github.com/vnetcni/vnetcni/internal/golden"
)

// seedModel is the seed's case: frontend, backend, database in one
// namespace, the backend reachable only from the frontend, the database
// only from the backend, and nothing else in.
func seedModel() *Model {
	m := NewModel()
	m.SetNamespace(Namespace{Name: "shop", Labels: lbl("kubernetes.io/metadata.name=shop")})
	m.SetNamespace(Namespace{Name: "ops", Labels: lbl("kubernetes.io/metadata.name=ops,role=monitoring")})
	m.SetPod(mkPod("shop", "frontend-1", "10.0.0.10", "app=shop,tier=frontend"))
	m.SetPod(mkPod("shop", "backend-1", "10.0.0.11", "app=shop,tier=backend", ports(NamedPort{Name: "http", Port: 8080})))
	m.SetPod(mkPod("shop", "backend-2", "10.0.1.11", "app=shop,tier=backend", remote, ports(NamedPort{Name: "http", Port: 8080})))
	m.SetPod(mkPod("shop", "database-1", "10.0.0.12", "app=shop,tier=database"))
	m.SetPod(mkPod("ops", "prometheus", "10.0.1.50", "app=prometheus", remote))
	m.SetPolicy(mkPolicy("shop", "default-deny", "", types(netv1.PolicyTypeIngress)))
	m.SetPolicy(mkPolicy("shop", "backend", "tier=backend",
		ingressRule(peers(podPeer("tier=frontend")), namedPort("", "http")),
		ingressRule(peers(nsPeer("role=monitoring")), port("", 9100))))
	m.SetPolicy(mkPolicy("shop", "database", "tier=database",
		ingressRule(peers(podPeer("tier=backend")), port("TCP", 5432))))
	m.SetPolicy(mkPolicy("shop", "frontend", "tier=frontend",
		ingressRule(peers(ipPeer("0.0.0.0/0", "10.0.0.0/8")), port("TCP", 443))))
	return m
}

func TestRenderGolden(t *testing.T) {
	golden.Check(t, filepath.Join("testdata", "seed.nft"), Compile(seedModel()).Render())
}

// TestDiffGolden: each change is the few operations it should be, printed
// as nft commands.
func TestDiffGolden(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(m *Model)
	}{
		{"new-remote-frontend", func(m *Model) {
			m.SetPod(mkPod("shop", "frontend-2", "10.0.1.10", "app=shop,tier=frontend", remote))
		}},
		{"relabel-local-pod", func(m *Model) {
			m.SetPod(mkPod("shop", "frontend-1", "10.0.0.10", "app=shop,tier=backend", ports(NamedPort{Name: "http", Port: 8080})))
		}},
		{"new-local-backend", func(m *Model) {
			m.SetPod(mkPod("shop", "backend-3", "10.0.0.13", "app=shop,tier=backend", ports(NamedPort{Name: "http", Port: 8081})))
		}},
		{"delete-policy", func(m *Model) { m.DeletePolicy("shop", "database") }},
		{"change-port", func(m *Model) {
			m.SetPolicy(mkPolicy("shop", "database", "tier=database",
				ingressRule(peers(podPeer("tier=backend")), port("TCP", 5432), port("TCP", 5433))))
		}},
		{"namespace-label", func(m *Model) {
			m.SetNamespace(Namespace{Name: "ops", Labels: lbl("kubernetes.io/metadata.name=ops")})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := seedModel()
			old := Compile(m)
			tc.change(m)
			new := Compile(m)
			ops := Diff(old, new)
			golden.Check(t, filepath.Join("testdata", "diff-"+tc.name+".nft"), Script(ops))
			got := old.Clone()
			if err := got.Apply(ops); err != nil {
				t.Fatalf("Apply(Diff): %v", err)
			}
			if d := cmp.Diff(new.Render(), got.Render()); d != "" {
				t.Errorf("old + Diff != new (-new +got):\n%s", d)
			}
		})
	}
}

// TestDiffRandom: through random changes, the incremental compile equals a
// fresh one, and Diff's operations are valid in order (objects exist
// before use and are unused when deleted) and reach the new state.
func TestDiffRandom(t *testing.T) {
	seed := uint64(os.Getpid())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	apps := []string{"a", "b", "c", "d"}
	nss := []string{"n1", "n2", "n3"}
	randPod := func(i int) Pod {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i / 200), byte(i%200 + 1)})
		p := mkPod(nss[r.IntN(len(nss))], "p"+string(rune('a'+i)), ip.String(), "app="+apps[r.IntN(len(apps))])
		p.Local = r.IntN(2) == 0
		p.Ports = []NamedPort{{Name: "web", Port: int32(8000 + r.IntN(3))}}
		return p
	}
	randPolicy := func(i int) *netv1.NetworkPolicy {
		var opts []func(*netv1.NetworkPolicy)
		switch r.IntN(3) {
		case 0:
			opts = append(opts, ingressRule(peers(podPeer("app="+apps[r.IntN(4)])), port("", 80+r.IntN(3))))
		case 1:
			opts = append(opts, egressRule(peers(nsPodPeer("", "app="+apps[r.IntN(4)]), ipPeer("192.0.2.0/24", "192.0.2.64/26")), namedPort("", "web")))
		default:
			opts = append(opts, types(netv1.PolicyTypeIngress, netv1.PolicyTypeEgress), ingressRule(peers(nsPeer("")), portRange("UDP", 1000, 1000+r.IntN(50))))
		}
		return mkPolicy(nss[r.IntN(len(nss))], "pol"+string(rune('a'+i)), "app="+apps[r.IntN(len(apps))], opts...)
	}
	m := NewModel()
	for _, n := range nss {
		m.SetNamespace(Namespace{Name: n, Labels: lbl("name=" + n)})
	}
	state := Compile(m)
	kernel := state.Clone()
	for step := range 300 {
		switch r.IntN(7) {
		case 5:
			m.SetNamespace(Namespace{Name: nss[r.IntN(len(nss))], Labels: lbl("name=" + nss[r.IntN(len(nss))])})
		case 6:
			p := randPod(r.IntN(30))
			if r.IntN(2) == 0 {
				m.Bind(p.Namespace, p.Name, netip.AddrFrom4([4]byte{10, 9, 0, byte(r.IntN(4))}))
			} else {
				m.Unbind(p.Namespace, p.Name, netip.AddrFrom4([4]byte{10, 9, 0, byte(r.IntN(4))}))
			}
		case 0, 1:
			m.SetPod(randPod(r.IntN(30)))
		case 2:
			p := randPod(r.IntN(30))
			m.DeletePod(p.Namespace, p.Name)
		case 3:
			m.SetPolicy(randPolicy(r.IntN(8)))
		case 4:
			p := randPolicy(r.IntN(8))
			m.DeletePolicy(p.Namespace, p.Name)
		}
		next := Compile(m)
		if d := cmp.Diff(compileFresh(m).Render(), next.Render()); d != "" {
			t.Fatalf("step %d: incremental compile differs from a fresh one (-fresh +incremental):\n%s", step, d)
		}
		ops := Diff(state, next)
		if err := kernel.Apply(ops); err != nil {
			t.Fatalf("step %d: Apply(Diff): %v\n%s", step, err, Script(ops))
		}
		if d := cmp.Diff(next.Render(), kernel.Render()); d != "" {
			t.Fatalf("step %d: kernel != desired (-want +got):\n%s", step, d)
		}
		state = next
	}
}

// compileFresh compiles the model from nothing, leaving its cache alone.
func compileFresh(m *Model) *State {
	cp := *m
	cp.cache, cp.allDirty = nil, true
	return Compile(&cp)
}

// TestLabelChangeIsElements: relabelling a pod that is only a peer, or
// adding a remote pod, changes set elements and nothing else.
func TestLabelChangeIsElements(t *testing.T) {
	m := seedModel()
	old := Compile(m)
	m.SetPod(mkPod("ops", "prometheus", "10.0.1.50", "app=prometheus,tier=frontend", remote))
	m.SetPod(mkPod("shop", "frontend-9", "10.0.3.9", "tier=frontend", remote))
	for _, o := range Diff(old, Compile(m)) {
		if o.Kind != OpAddElems && o.Kind != OpDelElems {
			t.Errorf("op %q: want only element changes", o)
		}
		if strings.Contains(o.String(), "verdict") {
			t.Errorf("op %q touches a verdict map", o)
		}
	}
}
