// Package probe checks connectivity from inside a network namespace: ICMP
// echo, TCP connect, HTTP GET and DNS queries, each with its socket created
// in the namespace so the traffic starts there and nowhere else. It also
// offers a TCP echo server whose socket lives in a namespace.
//
// Every function takes the namespace as a name under /run/netns ("lab-vm1")
// or as a path ("/proc/1234/ns/net"); anything containing a slash is a path.
// Each probe returns within its timeout; errors name the namespace, the
// destination and what went wrong.
package probe

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/vnetcni/vnetcni/internal/netns"
)

// maxBody bounds how much of an HTTP answer HTTPGet reads.
const maxBody = 4 << 20

// ErrTimeout is wrapped by the errors of Ping and DNSQuery when no answer
// came in time.
var ErrTimeout = errors.New("timed out")

// ErrNXDomain is wrapped by DNSQuery's error when the server answers that
// the name does not exist.
var ErrNXDomain = errors.New("name does not exist (NXDOMAIN)")

// nsPath resolves a namespace name or path to a path.
func nsPath(ns string) (string, error) {
	switch {
	case ns == "":
		return "", errors.New("no network namespace given")
	case strings.ContainsRune(ns, '/'):
		return ns, nil
	default:
		return netns.Path(ns), nil
	}
}

// inNS runs fn on a thread inside the namespace; sockets fn creates stay
// in that namespace after fn returns.
func inNS(ns string, fn func() error) error {
	p, err := nsPath(ns)
	if err != nil {
		return err
	}
	return netns.DoPath(p, fn)
}

// Ping sends one ICMP echo request to dst from inside the namespace and
// waits up to timeout for the matching reply. An ICMP destination
// unreachable for the request ends the wait early.
// Equivalent to: ip netns exec NS ping -c1 -W TIMEOUT DST.
func Ping(ns string, dst netip.Addr, timeout time.Duration) error {
	return PingFrom(ns, netip.Addr{}, dst, timeout)
}

// PingFrom is Ping with the request's source address fixed to src (which
// must be an address of the namespace); an invalid src lets the kernel
// choose. Equivalent to: ping -c1 -I SRC DST.
func PingFrom(ns string, src, dst netip.Addr, timeout time.Duration) error {
	if err := ping(ns, src, dst, timeout); err != nil {
		if src.IsValid() {
			return fmt.Errorf("ping %s from %s in netns %s: %w", dst, src, ns, err)
		}
		return fmt.Errorf("ping %s in netns %s: %w", dst, ns, err)
	}
	return nil
}

func ping(ns string, src, dst netip.Addr, timeout time.Duration) error {
	if !dst.Is4() {
		return errors.New("only IPv4 destinations are supported")
	}
	bind := "0.0.0.0"
	if src.IsValid() {
		bind = src.String()
	}
	var c *icmp.PacketConn
	err := inNS(ns, func() error {
		var err error
		c, err = icmp.ListenPacket("ip4:icmp", bind)
		return err
	})
	if err != nil {
		return fmt.Errorf("open ICMP socket: %w", err)
	}
	defer c.Close()

	var rnd [10]byte
	_, _ = rand.Read(rnd[:])
	id := int(binary.BigEndian.Uint16(rnd[0:2]))
	seq := int(binary.BigEndian.Uint16(rnd[2:4]))
	payload := append([]byte("vnetcni-probe-"), rnd[4:]...)
	req, err := (&icmp.Message{
		Type: ipv4.ICMPTypeEcho,
		Body: &icmp.Echo{ID: id, Seq: seq, Data: payload},
	}).Marshal(nil)
	if err != nil {
		return fmt.Errorf("encode echo request: %w", err)
	}
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("send echo request: %w", err)
	}
	buf := make([]byte, 1500)
	for {
		n, peer, err := c.ReadFrom(buf)
		if err != nil {
			if isTimeout(err) {
				return fmt.Errorf("no echo reply within %v: %w", timeout, ErrTimeout)
			}
			return fmt.Errorf("receive: %w", err)
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil {
			continue
		}
		from := addrOf(peer)
		switch body := m.Body.(type) {
		case *icmp.Echo:
			if m.Type == ipv4.ICMPTypeEchoReply && body.ID == id && body.Seq == seq && from == dst {
				return nil
			}
		case *icmp.DstUnreach:
			if echoID, ok := quotedEchoID(body.Data); ok && echoID == id {
				return fmt.Errorf("destination unreachable (code %d) reported by %s", m.Code, from)
			}
		}
	}
}

// quotedEchoID extracts the echo identifier from the datagram an ICMP
// error quotes (IPv4 header, then the first 8 bytes of our echo request).
func quotedEchoID(b []byte) (int, bool) {
	if len(b) < 20 {
		return 0, false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl+8 || b[9] != 1 /* ICMP */ || b[ihl] != byte(ipv4.ICMPTypeEcho) {
		return 0, false
	}
	return int(binary.BigEndian.Uint16(b[ihl+4:])), true
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.IPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dial connects from inside the namespace. Only IP literals are accepted:
// resolving a name would send DNS queries from outside the namespace.
func dial(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return nil, fmt.Errorf("dial %s: want an IP address and port: %w", addr, err)
	}
	var c net.Conn
	err := inNS(ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// DialTCP opens a TCP connection to dst from inside the namespace.
func DialTCP(ns string, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := dial(ctx, ns, "tcp", dst.String())
	if err != nil {
		return nil, fmt.Errorf("connect to %s in netns %s: %w", dst, ns, err)
	}
	return c, nil
}

// TCPConnect reports whether a TCP connection to dst can be established
// from inside the namespace; the connection is closed at once.
// Equivalent to: ip netns exec NS nc -z -w TIMEOUT ADDR PORT.
func TCPConnect(ns string, dst netip.AddrPort, timeout time.Duration) error {
	c, err := DialTCP(ns, dst, timeout)
	if err != nil {
		return err
	}
	return c.Close()
}

// HTTPGet fetches url from inside the namespace, with the given extra
// request headers, and returns the status and body. The URL's host must be
// an IP address. No proxy is used and the connection is not reused.
// Equivalent to: ip netns exec NS curl -H ... URL.
func HTTPGet(ns string, url string, header http.Header, timeout time.Duration) (int, []byte, error) {
	tr := &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dial(ctx, ns, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: timeout}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("GET %s in netns %s: %w", url, ns, err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("GET %s in netns %s: %w", url, ns, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return resp.StatusCode, body, fmt.Errorf("GET %s in netns %s: read body: %w", url, ns, err)
	}
	return resp.StatusCode, body, nil
}

// DNSQuery asks server over UDP, from inside the namespace, for the IPv4
// addresses of name. A name the server says does not exist gives an error
// wrapping ErrNXDomain; a name without A records gives no addresses and
// no error. Equivalent to: ip netns exec NS dig @SERVER NAME A.
func DNSQuery(ns string, server netip.AddrPort, name string, timeout time.Duration) ([]netip.Addr, error) {
	addrs, err := dnsQuery(ns, server, name, timeout)
	if err != nil {
		return nil, fmt.Errorf("resolve %s at %s in netns %s: %w", name, server, ns, err)
	}
	return addrs, nil
}

func dnsQuery(ns string, server netip.AddrPort, name string, timeout time.Duration) ([]netip.Addr, error) {
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	qname, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, err
	}
	var rnd [2]byte
	_, _ = rand.Read(rnd[:])
	id := binary.BigEndian.Uint16(rnd[:])
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(dnsmessage.Question{Name: qname, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		return nil, err
	}
	query, err := b.Finish()
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := dial(ctx, ns, "udp", server.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	if _, err := c.Write(query); err != nil {
		return nil, fmt.Errorf("send query: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if isTimeout(err) {
				return nil, fmt.Errorf("no answer within %v: %w", timeout, ErrTimeout)
			}
			return nil, fmt.Errorf("receive answer: %w", err)
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil || h.ID != id || !h.Response {
			continue // not the answer to this query
		}
		switch h.RCode {
		case dnsmessage.RCodeSuccess:
		case dnsmessage.RCodeNameError:
			return nil, ErrNXDomain
		default:
			return nil, fmt.Errorf("server answered %v", h.RCode)
		}
		if err := p.SkipAllQuestions(); err != nil {
			return nil, fmt.Errorf("decode answer: %w", err)
		}
		var out []netip.Addr
		for {
			rh, err := p.AnswerHeader()
			if errors.Is(err, dnsmessage.ErrSectionDone) {
				return out, nil
			}
			if err != nil {
				return nil, fmt.Errorf("decode answer: %w", err)
			}
			if rh.Type != dnsmessage.TypeA {
				if err := p.SkipAnswer(); err != nil {
					return nil, fmt.Errorf("decode answer: %w", err)
				}
				continue
			}
			a, err := p.AResource()
			if err != nil {
				return nil, fmt.Errorf("decode answer: %w", err)
			}
			out = append(out, netip.AddrFrom4(a.A))
		}
	}
}

// ListenTCP opens a TCP listener on addr inside the namespace. The
// listener keeps working from any goroutine.
func ListenTCP(ns string, addr netip.AddrPort) (net.Listener, error) {
	var l net.Listener
	err := inNS(ns, func() error {
		var err error
		l, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in netns %s: %w", addr, ns, err)
	}
	return l, nil
}

// ServeEcho accepts connections on l and writes back whatever each peer
// sends, until l is closed; it then returns nil. Run it in a goroutine.
func ServeEcho(l net.Listener) error {
	for {
		c, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("echo server on %s: %w", l.Addr(), err)
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// SourceSeen listens on at in namespace on, connects to it from namespace
// from, and returns the source address the listener saw: what a peer sees
// of a client after any NAT on the way. Failures read as a short reason
// ("no answer", "refused"), for a table.
func SourceSeen(on string, at netip.AddrPort, from string, timeout time.Duration) string {
	ln, err := ListenTCP(on, at)
	if err != nil {
		return err.Error()
	}
	defer ln.Close()
	seen := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			seen <- err.Error()
			return
		}
		defer c.Close()
		seen <- addrOf(c.RemoteAddr()).String()
	}()
	if err := TCPConnect(from, at, timeout); err != nil {
		if isTimeout(err) {
			return "no answer"
		}
		if strings.Contains(err.Error(), "refused") {
			return "refused"
		}
		return err.Error()
	}
	select {
	case s := <-seen:
		return s
	case <-time.After(timeout):
		return "no answer"
	}
}
