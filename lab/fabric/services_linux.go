package fabric

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vnetcni/vnetcni/internal/netns"
)

// Service names for Services.Start and Services.Stop.
const (
	ServiceWireserver = "wireserver" // HTTP on 168.63.129.16:80 and :32526
	ServiceDNS        = "dns"        // UDP and TCP on 168.63.129.16:53
	ServiceIMDS       = "imds"       // HTTP on 169.254.169.254:80
	ServiceInternet   = "internet"   // HTTP on 203.0.113.100:80
	ServiceDHCP       = "dhcp"       // DHCP from 168.63.129.16 on every VM port
)

// ServiceNames lists every service Serve starts.
func ServiceNames() []string {
	return []string{ServiceWireserver, ServiceDNS, ServiceIMDS, ServiceInternet, ServiceDHCP}
}

// Services are the fabric's servers, running in this process with their
// sockets inside the fabric and internet namespaces. Each can be stopped
// and started again, to emulate an outage.
type Services struct {
	f       *Fabric
	mu      sync.Mutex
	running map[string]*server
}

// server is one running service: what to close to stop it, and the
// goroutines to wait for.
type server struct {
	closers []io.Closer
	wg      sync.WaitGroup
}

func (s *server) stop() error {
	var errs []error
	for _, c := range s.closers {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// Serve starts every service. Close the Services before Destroy.
func (f *Fabric) Serve() (*Services, error) {
	s := &Services{f: f, running: map[string]*server{}}
	for _, name := range ServiceNames() {
		if err := s.Start(name); err != nil {
			return nil, errors.Join(err, s.Close())
		}
	}
	return s, nil
}

// Start starts a stopped service; starting a running one does nothing.
func (s *Services) Start(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[name] != nil {
		return nil
	}
	srv := &server{}
	var err error
	switch name {
	case ServiceWireserver:
		err = errors.Join(
			srv.serveHTTP(s.f.FabricNetNS(), netip.AddrPortFrom(WireserverIP, 80), s.f.WireserverHandler()),
			srv.serveHTTP(s.f.FabricNetNS(), netip.AddrPortFrom(WireserverIP, WireserverManagementPort), managementHandler()))
	case ServiceDNS:
		err = srv.serveDNS(s.f.FabricNetNS(), netip.AddrPortFrom(WireserverIP, 53), s.f.resolve)
	case ServiceIMDS:
		err = srv.serveHTTP(s.f.FabricNetNS(), netip.AddrPortFrom(IMDSIP, 80), s.f.IMDSHandler())
	case ServiceInternet:
		err = srv.serveHTTP(s.f.InternetNetNS(), netip.AddrPortFrom(InternetHostIP, 80), s.f.internetHostHandler())
	case ServiceDHCP:
		err = srv.serveDHCP(s.f)
	default:
		return fmt.Errorf("start service %q: unknown service, want one of %v", name, ServiceNames())
	}
	if err != nil {
		return fmt.Errorf("start service %s: %w", name, errors.Join(err, srv.stop()))
	}
	s.running[name] = srv
	return nil
}

// Stop stops a service and waits for it; stopping a stopped one does nothing.
func (s *Services) Stop(name string) error {
	if !slices.Contains(ServiceNames(), name) {
		return fmt.Errorf("stop service %q: unknown service, want one of %v", name, ServiceNames())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	srv := s.running[name]
	if srv == nil {
		return nil
	}
	delete(s.running, name)
	if err := srv.stop(); err != nil {
		return fmt.Errorf("stop service %s: %w", name, err)
	}
	return nil
}

// Close stops every service.
func (s *Services) Close() error {
	var errs []error
	for _, name := range ServiceNames() {
		errs = append(errs, s.Stop(name))
	}
	return errors.Join(errs...)
}

// listen opens a socket inside a namespace; it stays there.
func listen[T any](ns string, fn func() (T, error)) (T, error) {
	var v T
	err := netns.Do(ns, func() error {
		var err error
		v, err = fn()
		return err
	})
	return v, err
}

func (s *server) serveHTTP(ns string, addr netip.AddrPort, h http.Handler) error {
	l, err := listen(ns, func() (net.Listener, error) { return net.Listen("tcp4", addr.String()) })
	if err != nil {
		return fmt.Errorf("listen on %s in netns %s: %w", addr, ns, err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.closers = append(s.closers, hs)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = hs.Serve(l) // returns when hs is closed
	}()
	return nil
}

// serveDNS answers queries over UDP and TCP.
func (s *server) serveDNS(ns string, addr netip.AddrPort, lookup func(string) (netip.Addr, bool)) error {
	pc, err := listen(ns, func() (net.PacketConn, error) { return net.ListenPacket("udp4", addr.String()) })
	if err != nil {
		return fmt.Errorf("listen on udp %s in netns %s: %w", addr, ns, err)
	}
	s.closers = append(s.closers, pc)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			if answer, err := answerDNS(buf[:n], lookup); err == nil {
				_, _ = pc.WriteTo(answer, from)
			}
		}
	}()

	l, err := listen(ns, func() (net.Listener, error) { return net.Listen("tcp4", addr.String()) })
	if err != nil {
		return fmt.Errorf("listen on tcp %s in netns %s: %w", addr, ns, err)
	}
	conns := &connSet{m: map[net.Conn]bool{}}
	s.closers = append(s.closers, l, conns)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !conns.add(c) {
				c.Close()
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer conns.remove(c)
				serveDNSConn(c, lookup)
			}()
		}
	}()
	return nil
}

// serveDNSConn answers length-prefixed queries on one TCP connection.
func serveDNSConn(c net.Conn, lookup func(string) (netip.Addr, bool)) {
	for {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		a, err := answerDNS(q, lookup)
		if err != nil {
			return
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(a))), a...)); err != nil {
			return
		}
	}
}

// connSet tracks open connections so stopping a service closes them.
type connSet struct {
	mu     sync.Mutex
	m      map[net.Conn]bool
	closed bool
}

func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.m[c] = true
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, c)
	c.Close()
}

func (s *connSet) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.m {
		c.Close()
	}
	return nil
}
