package probe

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/netns/netnstest"
)

var (
	addrA = netip.MustParseAddr("10.99.0.1")
	addrB = netip.MustParseAddr("10.99.0.2")
	dead  = netip.MustParseAddr("10.99.0.3") // on-link, nobody home
)

// pair creates two namespaces joined by a veth (A 10.99.0.1/24, B
// 10.99.0.2/24) and removes them when the test ends.
func pair(t *testing.T) (a, b string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	prefix := "vft" + hex.EncodeToString(rnd[:])
	a, b = prefix+"-a", prefix+"-b"
	for _, n := range []string{a, b} {
		if err := netns.Create(n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := netns.Delete(n); err != nil {
				t.Error(err)
			}
		})
	}
	ha, closeA := handle(t, a)
	defer closeA()
	hb, closeB := handle(t, b)
	defer closeB()
	bfd, err := vnetns.GetFromPath(netns.Path(b))
	if err != nil {
		t.Fatal(err)
	}
	defer bfd.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(bfd)}
	if err := ha.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	for _, x := range []struct {
		h    *netlink.Handle
		addr netip.Addr
	}{{ha, addrA}, {hb, addrB}} {
		for _, name := range []string{"lo", "eth0"} {
			l, err := x.h.LinkByName(name)
			if err != nil {
				t.Fatal(err)
			}
			if name == "eth0" {
				ipn := &net.IPNet{IP: x.addr.AsSlice(), Mask: net.CIDRMask(24, 32)}
				if err := x.h.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
					t.Fatal(err)
				}
			}
			if err := x.h.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		}
	}
	return a, b
}

func handle(t *testing.T, ns string) (*netlink.Handle, func()) {
	t.Helper()
	h := netnstest.Handle(t, ns)
	return h, h.Close
}

// quick asserts fn fails, and within timeout plus a margin.
func quick(t *testing.T, what string, timeout time.Duration, fn func() error) error {
	t.Helper()
	start := time.Now()
	err := fn()
	if err == nil {
		t.Fatalf("%s: succeeded, want an error", what)
	}
	if d := time.Since(start); d > timeout+time.Second {
		t.Errorf("%s: took %v, want at most the %v timeout", what, d, timeout)
	}
	return err
}

const short = 500 * time.Millisecond

func TestPing(t *testing.T) {
	a, b := pair(t)
	if err := Ping(a, addrB, 2*time.Second); err != nil {
		t.Errorf("ping B from A: %v", err)
	}
	if err := PingFrom(b, addrB, addrA, 2*time.Second); err != nil {
		t.Errorf("ping A from B's address: %v", err)
	}
	// The namespace's own address answers through lo.
	if err := Ping(netns.Path(a), addrA, 2*time.Second); err != nil {
		t.Errorf("ping own address by netns path: %v", err)
	}
	err := quick(t, "ping dead address", short, func() error { return Ping(a, dead, short) })
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("ping dead address: got %v, want ErrTimeout", err)
	}
	quick(t, "ping from a foreign source", short, func() error { return PingFrom(a, addrB, addrB, short) })
	quick(t, "ping in missing netns", short, func() error { return Ping(a+"-missing", addrB, short) })
}

func TestTCP(t *testing.T) {
	a, b := pair(t)
	l, err := ListenTCP(b, netip.AddrPortFrom(addrB, 7))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ServeEcho(l) }()
	t.Cleanup(func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("ServeEcho: %v", err)
		}
	})

	if err := TCPConnect(a, netip.AddrPortFrom(addrB, 7), 2*time.Second); err != nil {
		t.Errorf("connect to echo server: %v", err)
	}
	c, err := DialTCP(a, netip.AddrPortFrom(addrB, 7), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); got != addrA {
		t.Errorf("connection from %v, want from %v (A's address)", got, addrA)
	}
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Errorf("echo: got %q, %v, want %q", buf, err, "hello")
	}

	quick(t, "connect to closed port", short, func() error { return TCPConnect(a, netip.AddrPortFrom(addrB, 8), short) })
	quick(t, "connect to dead address", short, func() error { return TCPConnect(a, netip.AddrPortFrom(dead, 7), short) })
}

func TestHTTPGet(t *testing.T) {
	a, b := pair(t)
	l, err := ListenTCP(b, netip.AddrPortFrom(addrB, 80))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Remote", r.RemoteAddr)
		if r.Header.Get("Metadata") != "true" {
			http.Error(w, "no header", http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, "ok")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	url := "http://" + addrB.String() + "/x"
	code, body, err := HTTPGet(a, url, http.Header{"Metadata": {"true"}}, 2*time.Second)
	if err != nil || code != http.StatusOK || string(body) != "ok" {
		t.Errorf("GET with header: got %d %q %v, want 200 \"ok\"", code, body, err)
	}
	code, _, err = HTTPGet(a, url, nil, 2*time.Second)
	if err != nil || code != http.StatusBadRequest {
		t.Errorf("GET without header: got %d %v, want 400", code, err)
	}

	quick(t, "GET from dead address", short, func() error {
		_, _, err := HTTPGet(a, "http://"+dead.String()+"/", nil, short)
		return err
	})
	quick(t, "GET with a host name", short, func() error {
		_, _, err := HTTPGet(a, "http://localhost/", nil, short)
		return err
	})
}

func TestDNSQuery(t *testing.T) {
	a, b := pair(t)
	var pc net.PacketConn
	if err := netns.Do(b, func() error {
		var err error
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(addrB, 53).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go serveDNS(pc, map[string]netip.Addr{"host.test.": netip.MustParseAddr("192.0.2.7")})

	server := netip.AddrPortFrom(addrB, 53)
	got, err := DNSQuery(a, server, "host.test", 2*time.Second)
	if err != nil || len(got) != 1 || got[0] != netip.MustParseAddr("192.0.2.7") {
		t.Errorf("query host.test: got %v, %v, want [192.0.2.7]", got, err)
	}
	if _, err := DNSQuery(a, server, "nope.test", 2*time.Second); !errors.Is(err, ErrNXDomain) {
		t.Errorf("query nope.test: got %v, want ErrNXDomain", err)
	}
	err = quick(t, "query dead server", short, func() error {
		_, err := DNSQuery(a, netip.AddrPortFrom(dead, 53), "host.test", short)
		return err
	})
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("query dead server: got %v, want ErrTimeout", err)
	}
	quick(t, "query closed port", short, func() error {
		_, err := DNSQuery(a, netip.AddrPortFrom(addrB, 54), "host.test", short)
		return err
	})
}

// serveDNS answers A queries from names until pc is closed.
func serveDNS(pc net.PacketConn, names map[string]netip.Addr) {
	buf := make([]byte, 512)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		a, ok := names[q.Name.String()]
		rh := dnsmessage.Header{ID: h.ID, Response: true, RCode: dnsmessage.RCodeSuccess}
		if !ok {
			rh.RCode = dnsmessage.RCodeNameError
		}
		bld := dnsmessage.NewBuilder(nil, rh)
		_ = bld.StartQuestions()
		_ = bld.Question(q)
		_ = bld.StartAnswers()
		if ok {
			_ = bld.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: a.As4()})
		}
		msg, err := bld.Finish()
		if err != nil {
			continue
		}
		_, _ = pc.WriteTo(msg, from)
	}
}
