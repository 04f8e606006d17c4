package policy

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	netv1 "k8s.io/api/networking/v1"
)

// scaleModel is a cluster of pods pods in nss namespaces (the same number
// in each) with policies policies (two per namespace, or as many as asked),
// every localEvery-th pod on this node. Pods carry app, tier and a named
// port; policies are a default deny per namespace and, per tier, allow
// rules with podSelector, namespaceSelector+podSelector, named ports,
// ipBlock with except and an endPort range; a tenth of them name peers
// cluster-wide.
func scaleModel(pods, nss, policies, localEvery int) *Model {
	m := NewModel()
	tiers := []string{"frontend", "backend", "db"}
	for i := range nss {
		name := fmt.Sprintf("ns-%03d", i)
		m.SetNamespace(Namespace{Name: name, Labels: map[string]string{
			"kubernetes.io/metadata.name": name, "team": "t" + strconv.Itoa(i%20), "env": []string{"prod", "dev"}[i%2]}})
	}
	perNS := pods / nss
	for k := range pods {
		ns, j := k/perNS, k%perNS
		ip := netip.AddrFrom4([4]byte{10, byte(1 + k>>16), byte(k >> 8), byte(k)})
		m.SetPod(Pod{Namespace: fmt.Sprintf("ns-%03d", ns), Name: fmt.Sprintf("pod-%04d", j),
			Labels: map[string]string{"app": "app-" + strconv.Itoa(j%5), "tier": tiers[j%3], "pod-template-hash": strconv.Itoa(k % 7)},
			IPs:    []netip.Addr{ip}, Local: k%localEvery == 0,
			Ports: []NamedPort{{Name: "http", Port: int32(8080 + j%3)}, {Name: "metrics", Port: 9100}}})
	}
	for i := range policies {
		ns := fmt.Sprintf("ns-%03d", i%nss)
		round := i / nss
		if round == 0 {
			m.SetPolicy(mkPolicy(ns, "default-deny", "", types(netv1.PolicyTypeIngress)))
			continue
		}
		tier := tiers[round%3]
		opts := []func(*netv1.NetworkPolicy){
			types(netv1.PolicyTypeIngress, netv1.PolicyTypeEgress),
			ingressRule(peers(podPeer("tier="+tiers[(round+2)%3])), namedPort("", "http")),
			ingressRule(peers(nsPodPeer("team=t"+strconv.Itoa(i%20), "app=app-1")), port("TCP", 9090), portRange("TCP", 30000, 30100)),
			egressRule(peers(podPeer("tier="+tiers[(round+1)%3])), port("TCP", 5432)),
			egressRule(peers(ipPeer("0.0.0.0/0", "10.0.0.0/8", "172.16.0.0/12")), port("TCP", 443)),
			egressRule(peers(nsPodPeer("kubernetes.io/metadata.name=ns-000", "app=app-0")), port("UDP", 53), port("TCP", 53)),
		}
		if i%10 == 0 {
			opts = append(opts, ingressRule(peers(nsPodPeer("", "app=app-"+strconv.Itoa(i%5))), namedPort("", "metrics")))
		}
		m.SetPolicy(mkPolicy(ns, "allow-"+tier+"-"+strconv.Itoa(round), "tier="+tier, opts...))
	}
	return m
}

func rss() (cur, peak string) {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "VmRSS:" {
			cur = f[1] + " kB"
		}
		if len(f) >= 2 && f[0] == "VmHWM:" {
			peak = f[1] + " kB"
		}
	}
	return cur, peak
}

// cpu is the process's user + system time: unlike wall time, it does not
// count the time other processes of a loaded machine hold the cores
// (netlink work in the kernel runs in our syscalls, as system time).
func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func stateSize(s *State) (elems int) {
	for _, st := range s.Sets {
		elems += len(st.Elems)
	}
	return elems + len(s.Ingress) + len(s.Egress)
}

// TestScale measures the scale case: 10,000 pods, 1,000 policies,
// 500 namespaces. VNETCNI_POLICY_SCALE=1 runs it (make bench-policy);
// VNETCNI_POLICY_LOCAL=n puts every n-th pod on this node (default 97:
// 104 local pods; 1: all of them). With root it applies into a throwaway
// namespace's nftables. It prints figures and asserts only correctness.
func TestScale(t *testing.T) {
	if os.Getenv("VNETCNI_POLICY_SCALE") == "" {
		t.Skip("VNETCNI_POLICY_SCALE=1 runs the scale benchmark (make bench-policy)")
	}
	localEvery := 97 // prime: local pods of every tier and app
	if v, err := strconv.Atoi(os.Getenv("VNETCNI_POLICY_LOCAL")); err == nil && v > 0 {
		localEvery = v
	}
	start := time.Now()
	m := scaleModel(10000, 500, 1000, localEvery)
	t.Logf("model: 10000 pods (%d local), 500 namespaces, 1000 policies built in %v", (10000+localEvery-1)/localEvery, time.Since(start))

	start, c0 := time.Now(), cpu()
	s := Compile(m)
	compile := time.Since(start)
	t.Logf("cold compile: %v (cpu %v): %d sets, %d chains, %d elements, %d ingress + %d egress verdicts",
		compile, cpu()-c0, len(s.Sets), len(s.Chains), stateSize(s), len(s.Ingress), len(s.Egress))

	var kernel Kernel = &Fake{}
	if os.Geteuid() == 0 {
		ns := tempNetNS(t, "b")
		kernel = openTable(t, ns)
	} else {
		t.Log("not root: applying to the in-memory fake")
	}
	e := NewEngine(kernel)
	e.model = m
	e.SetReady()
	m.invalidateAll()
	start, c0 = time.Now(), cpu()
	if err := e.Sync(); err != nil {
		t.Fatalf("cold apply: %v", err)
	}
	t.Logf("cold compile + apply (Replace, one transaction): %v (cpu %v)", time.Since(start), cpu()-c0)

	measure := func(what string, change func(m *Model)) {
		t.Helper()
		before := e.Applied()
		start, c0 := time.Now(), cpu()
		e.Update(change)
		if err := e.Sync(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		d, dc := time.Since(start), cpu()-c0
		ops := Diff(before, e.Applied())
		n := 0
		for _, o := range ops {
			n += len(o.Elems) + len(o.Verdicts) + len(o.Rules)
		}
		t.Logf("%s: %v (cpu %v; compile + diff + apply), %d operations, %d elements/rules", what, d, dc, len(ops), n)
	}
	measure("one policy change (a port added)", func(m *Model) {
		p, _ := m.Policy("ns-033", "allow-backend-1") // selects ns-033/pod-0019, local
		cp := p.DeepCopy()
		cp.Spec.Ingress[0].Ports = append(cp.Spec.Ingress[0].Ports, port("TCP", 8443))
		m.SetPolicy(cp)
	})
	measure("one label change (a remote pod becomes a peer)", func(m *Model) {
		p, _ := m.Pod("ns-033", "pod-0001")
		p.Labels = map[string]string{"app": "app-1", "tier": "frontend"}
		m.SetPod(p)
	})
	measure("one label change (a local pod leaves a policy)", func(m *Model) {
		p, _ := m.Pod("ns-033", "pod-0019")
		p.Labels = map[string]string{"app": "app-4", "tier": "db"}
		m.SetPod(p)
	})
	measure("one new local pod (EnsurePod)", func(m *Model) {
		m.SetPod(mkPod("ns-001", "new", "10.200.0.1", "app=app-1,tier=db"))
	})
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	cur, peak := rss()
	t.Logf("memory: heap in use %d MiB after GC; process RSS %s, peak %s (the test binary, model and two states)",
		ms.HeapInuse>>20, cur, peak)
	runtime.KeepAlive(e)
}

func BenchmarkCompile(b *testing.B) {
	m := scaleModel(10000, 500, 1000, 97)
	b.ResetTimer()
	for b.Loop() {
		Compile(m)
	}
}

func BenchmarkNewLocalPod(b *testing.B) {
	m := scaleModel(10000, 500, 1000, 97)
	s := Compile(m)
	i := 0
	for b.Loop() {
		i++
		m.SetPod(mkPod("ns-001", "new", netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}).String(), "app=app-1,tier=backend"))
		next := Compile(m)
		Diff(s, next)
		s = next
	}
}
