package policy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	netv1 "k8s.io/api/networking/v1"

	"github.com/vnetcni/vnetcni/internal/netns"
)

func tempNetNS(t *testing.T, tag string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "vpol" + tag + hex.EncodeToString(b)
	if err := netns.Create(name); err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { _ = netns.Delete(name) })
	return name
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func openTable(t *testing.T, ns string) *Nftables {
	t.Helper()
	n, err := OpenNftables(netns.Path(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

var counterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

func listTable(t *testing.T, ns string) string {
	t.Helper()
	out := run(t, "ip", "netns", "exec", ns, "nft", "list", "table", "ip", TableName)
	out = counterRE.ReplaceAllString(out, "counter packets 0 bytes 0")
	// nft lists objects in the order they were made: compare them sorted.
	out = strings.TrimSuffix(strings.TrimSpace(out), "}")
	var blocks []string
	for _, b := range strings.Split(out, "\n\n") {
		blocks = append(blocks, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(b), "table ip "+TableName+" {")))
	}
	sort.Strings(blocks)
	return strings.Join(blocks, "\n\n")
}

// TestNftablesMatchesRender: what Replace and Update program over netlink is
// what nft makes of the State's printed script, object for object.
func TestNftablesMatchesRender(t *testing.T) {
	viaNetlink, viaScript := tempNetNS(t, "n"), tempNetNS(t, "s")
	m := seedModel()
	s := Compile(m)
	n := openTable(t, viaNetlink)
	if err := n.Replace(s); err != nil {
		t.Fatalf("Replace: %v", err)
	}
	load := func(st *State) {
		f, err := os.CreateTemp(t.TempDir(), "*.nft")
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("table ip " + TableName + "\ndelete table ip " + TableName + "\n" + st.Render())
		f.Close()
		run(t, "ip", "netns", "exec", viaScript, "nft", "-f", f.Name())
	}
	load(s)
	if d := cmp.Diff(listTable(t, viaScript), listTable(t, viaNetlink)); d != "" {
		t.Fatalf("Replace differs from nft -f of Render (-script +netlink):\n%s", d)
	}
	// Replace again (an agent restart) and a series of updates.
	if err := n.Replace(s); err != nil {
		t.Fatalf("Replace again: %v", err)
	}
	changes := []func(){
		func() { m.SetPod(mkPod("shop", "frontend-2", "10.0.0.9", "app=shop,tier=frontend")) },
		func() {
			m.SetPod(mkPod("shop", "frontend-1", "10.0.0.10", "app=shop,tier=backend", ports(NamedPort{Name: "http", Port: 8080})))
		},
		func() {
			m.SetPolicy(mkPolicy("shop", "database", "tier=database",
				ingressRule(peers(podPeer("tier=backend")), portRange("TCP", 5432, 5440), port("UDP", 0))))
		},
		func() { m.DeletePolicy("shop", "backend") },
		func() { m.SetNamespace(Namespace{Name: "ops"}) },
	}
	for i, change := range changes {
		change()
		next := Compile(m)
		if err := n.Update(Diff(s, next)); err != nil {
			t.Fatalf("change %d: Update: %v\n%s", i, err, Script(Diff(s, next)))
		}
		s = next
		load(s)
		if d := cmp.Diff(listTable(t, viaScript), listTable(t, viaNetlink)); d != "" {
			t.Fatalf("change %d: table differs from nft -f of Render (-script +netlink):\n%s", i, d)
		}
	}
	if err := n.Remove(); err != nil {
		t.Fatal(err)
	}
	if n.Present() {
		t.Error("table present after Remove")
	}
	if err := n.Remove(); err != nil {
		t.Errorf("Remove twice: %v", err)
	}
}

// node is a host namespace with pods attached by veths, routed as
// transparent mode does or bridged as bridge mode does.
type node struct {
	t    *testing.T
	host string
	pods map[string]string // pod name → namespace
	ips  map[string]string
	node string // the node's own address the pods reach
}

func newNode(t *testing.T, bridged bool) *node {
	n := &node{t: t, host: tempNetNS(t, "h"), pods: map[string]string{}, ips: map[string]string{}}
	run(t, "ip", "-n", n.host, "link", "set", "lo", "up")
	run(t, "ip", "netns", "exec", n.host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	if bridged {
		run(t, "ip", "-n", n.host, "link", "add", "br0", "type", "bridge")
		run(t, "ip", "-n", n.host, "addr", "add", "10.9.0.1/24", "dev", "br0")
		run(t, "ip", "-n", n.host, "link", "set", "br0", "up")
		// Bridged IPv4 passes the ip family's hooks, as bridge mode needs
		// for un-NAT of replies anyway.
		run(t, "ip", "netns", "exec", n.host, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
		n.node = "10.9.0.1"
	} else {
		n.node = "169.254.1.1"
	}
	return n
}

func (n *node) addPod(name, ip string, bridged bool) {
	t := n.t
	ns := tempNetNS(t, "p")
	n.pods[name], n.ips[name] = ns, ip
	hostIf := "azv" + name
	run(t, "ip", "-n", n.host, "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns)
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	run(t, "ip", "-n", n.host, "link", "set", hostIf, "up")
	if bridged {
		run(t, "ip", "-n", n.host, "link", "set", hostIf, "master", "br0")
		run(t, "ip", "-n", ns, "addr", "add", ip+"/24", "dev", "eth0")
		return
	}
	run(t, "ip", "-n", n.host, "addr", "add", "169.254.1.1/32", "dev", hostIf)
	run(t, "ip", "-n", n.host, "route", "add", ip+"/32", "dev", hostIf)
	run(t, "ip", "-n", ns, "addr", "add", ip+"/32", "dev", "eth0")
	run(t, "ip", "-n", ns, "route", "add", "169.254.1.1/32", "dev", "eth0")
	run(t, "ip", "-n", ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
}

// serve listens on TCP and UDP ports in a namespace: TCP connections get
// "ok", UDP datagrams are echoed.
func serve(t *testing.T, ns string, tcpPorts, udpPorts []int) {
	t.Helper()
	var wg sync.WaitGroup
	var closers []io.Closer
	err := netns.Do(ns, func() error {
		for _, p := range tcpPorts {
			l, err := net.Listen("tcp4", fmt.Sprintf(":%d", p))
			if err != nil {
				return err
			}
			closers = append(closers, l)
			wg.Go(func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Write([]byte("ok"))
					c.Close()
				}
			})
		}
		for _, p := range udpPorts {
			pc, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", p))
			if err != nil {
				return err
			}
			closers = append(closers, pc)
			wg.Go(func() {
				buf := make([]byte, 64)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					pc.WriteTo(buf[:n], from)
				}
			})
		}
		return nil
	})
	if err != nil {
		t.Fatalf("serve in %s: %v", ns, err)
	}
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
		wg.Wait()
	})
}

// connect opens a connection from namespace ns and reads the server's
// answer. Timeouts only separate "dropped" from "answered": a denied
// packet is never answered, however long the wait.
func connect(ns, ip string, proto Proto, port uint16, timeout time.Duration) error {
	var conn net.Conn
	err := netns.Do(ns, func() error {
		var err error
		conn, err = net.DialTimeout(proto.String()+"4", fmt.Sprintf("%s:%d", ip, port), timeout)
		return err
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if proto == ProtoUDP {
		if _, err := conn.Write([]byte("hi")); err != nil {
			return err
		}
	}
	buf := make([]byte, 8)
	if _, err := conn.Read(buf); err != nil {
		return err
	}
	return nil
}

// TestKernelEnforces: in a routed node (transparent mode) and a bridged
// one (bridge mode), the kernel delivers exactly what the policies allow,
// from pod to pod, and always from the node; an update takes effect.
func TestKernelEnforces(t *testing.T) {
	for _, bridged := range []bool{false, true} {
		mode := "routed"
		if bridged {
			mode = "bridged"
		}
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			nd := newNode(t, bridged)
			base := "10.9.0."
			nd.addPod("client", base+"5", bridged)
			nd.addPod("server", base+"6", bridged)
			nd.addPod("other", base+"7", bridged)
			for _, p := range []string{"client", "server", "other"} {
				serve(t, nd.pods[p], []int{80, 8080, 9090}, []int{53})
			}
			m := NewModel()
			m.SetNamespace(Namespace{Name: "default"})
			m.SetPod(mkPod("default", "client", base+"5", "app=client"))
			m.SetPod(mkPod("default", "server", base+"6", "app=server", ports(NamedPort{Name: "http", Port: 8080})))
			m.SetPod(mkPod("default", "other", base+"7", "app=other"))
			m.SetPolicy(mkPolicy("default", "server", "app=server",
				ingressRule(peers(podPeer("app=client")), namedPort("", "http"), port("UDP", 53))))
			m.SetPolicy(mkPolicy("default", "other", "app=other", types(netv1.PolicyTypeIngress, netv1.PolicyTypeEgress),
				egressRule(peers(podPeer("app=server")), port("TCP", 8080))))
			s := Compile(m)
			tbl := openTable(t, nd.host)
			if err := tbl.Replace(s); err != nil {
				t.Fatalf("Replace: %v", err)
			}
			flows := []struct {
				from, to string
				port     string
				want     bool
			}{
				{"client", "server", "8080/tcp", true},
				{"client", "server", "9090/tcp", false},
				{"client", "server", "53/udp", true},
				{"other", "server", "8080/tcp", false}, // other's egress allows, server's ingress does not
				{"client", "other", "80/tcp", false},   // other: ingress isolated, no rules
				{"other", "client", "80/tcp", false},   // other's egress
				{"server", "client", "80/tcp", true},   // neither isolated that way
				{"node", "other", "80/tcp", true},      // the node (kubelet probes)
				{"node", "server", "9090/tcp", true},
			}
			check := func(stage string, s *State, flows []struct {
				from, to string
				port     string
				want     bool
			}) {
				var wg sync.WaitGroup
				for _, f := range flows {
					wg.Go(func() {
						proto, port, _ := ParseProtoPort(f.port)
						fromNS, fromIP := nd.pods[f.from], nd.ips[f.from]
						if f.from == "node" {
							fromNS, fromIP = nd.host, nd.node
						}
						if f.from != "node" {
							d := s.Evaluate(Packet{Src: mustAddr(fromIP), Dst: mustAddr(nd.ips[f.to]), Proto: proto, Port: port})
							if d.Allowed() != f.want {
								t.Errorf("%s: Evaluate %s -> %s %s = %v, want %v", stage, f.from, f.to, f.port, d.Allowed(), f.want)
							}
						}
						timeout := 10 * time.Second
						if !f.want {
							timeout = 1500 * time.Millisecond
						}
						err := connect(fromNS, nd.ips[f.to], proto, port, timeout)
						if (err == nil) != f.want {
							t.Errorf("%s: %s -> %s %s: delivered = %v (%v), want %v", stage, f.from, f.to, f.port, err == nil, err, f.want)
						}
					})
				}
				wg.Wait()
			}
			check("initial", s, flows)

			// The kernel counted what each policy allowed and denied.
			counts, err := tbl.Counters(s)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []struct {
				key             string
				allowed, denied bool
			}{
				{"default/server ingress", true, true},
				{"default/other ingress", false, true},
				{"default/other egress", true, true}, // other -> server 8080 passed its egress
			} {
				c := counts[want.key]
				if (c.AllowedPackets > 0) != want.allowed || (c.DeniedPackets > 0) != want.denied {
					t.Errorf("counters %s = %+v; want allowed %v, denied %v", want.key, c, want.allowed, want.denied)
				}
			}

			// Relabel other as a client: it leaves its own policy and
			// becomes a peer of the server's.
			m.SetPod(mkPod("default", "other", base+"7", "app=client"))
			next := Compile(m)
			if err := tbl.Update(Diff(s, next)); err != nil {
				t.Fatalf("Update: %v", err)
			}
			check("relabelled", next, []struct {
				from, to string
				port     string
				want     bool
			}{
				{"other", "server", "8080/tcp", true},
				{"client", "other", "80/tcp", true},
				{"other", "server", "9090/tcp", false},
			})
		})
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
