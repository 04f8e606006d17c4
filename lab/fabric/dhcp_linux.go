package fabric

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/netns"
)

// The fabric's DHCP server reads and writes Ethernet frames on the VM
// ports with packet sockets: a client without an address sends from
// 0.0.0.0, which the port's filter (rightly) drops after the packet socket
// has seen it, and the answer must leave from 168.63.129.16, an address
// of the fabric's loopback, through one port.

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetConn is a packet socket bound to one interface.
type packetConn struct {
	f       *os.File
	rc      syscall.RawConn
	ifindex int
}

func openPacketConn(ns, dev string) (*packetConn, error) {
	var fd, idx int
	err := netns.Do(ns, func() error {
		l, err := net.InterfaceByName(dev)
		if err != nil {
			return fmt.Errorf("find %s: %w", dev, err)
		}
		idx = l.Index
		// ETH_P_ALL: such sockets see a frame before the ingress hook,
		// protocol-specific ones after it (and so after the port filter).
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("open a packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind a packet socket to %s: %w", dev, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open %s in netns %s for DHCP: %w", dev, ns, err)
	}
	f := os.NewFile(uintptr(fd), "dhcp-"+dev)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &packetConn{f: f, rc: rc, ifindex: idx}, nil
}

func (c *packetConn) Close() error { return c.f.Close() }

// read returns the next frame the interface received (not one it sent).
func (c *packetConn) read(buf []byte) (int, error) {
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		err := c.rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil {
			return 0, errors.Join(os.ErrClosed, err) // the only way Read fails
		}
		if rerr != nil {
			return 0, rerr
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		return n, nil
	}
}

func (c *packetConn) write(frame []byte) error {
	var werr error
	err := c.rc.Write(func(fd uintptr) bool {
		werr = unix.Sendto(int(fd), frame, 0, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: c.ifindex})
		return !errors.Is(werr, unix.EAGAIN)
	})
	return errors.Join(err, werr)
}

// dhcpRequestOf extracts a DHCP message sent to the server port from an
// Ethernet frame; nil when the frame is something else.
func dhcpRequestOf(frame []byte) *dhcpMsg {
	if len(frame) < 14+20+8 || binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IP {
		return nil
	}
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_UDP || len(ip) < ihl+8 {
		return nil
	}
	udp := ip[ihl:]
	if binary.BigEndian.Uint16(udp[2:4]) != DHCPServerPort {
		return nil
	}
	m, err := parseDHCP(udp[8:])
	if err != nil {
		return nil
	}
	return m
}

// dhcpFrame wraps a reply in UDP, IPv4 (from 168.63.129.16) and Ethernet
// (from the fabric's MAC). It goes where RFC 2131 sends it: to a client's
// address when it has one (renewing), to the broadcast address when the
// client asks for it or is refused, else to the offered address at the
// client's MAC.
func dhcpFrame(req, reply *dhcpMsg) []byte {
	dstMAC, dstIP := net.HardwareAddr(req.chaddr), reply.yiaddr
	switch {
	case req.ciaddr.IsValid() && !req.ciaddr.IsUnspecified() && reply.msgType() != dhcpNak:
		dstIP = req.ciaddr
	case reply.flags&0x8000 != 0 || reply.msgType() == dhcpNak:
		dstMAC, dstIP = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	payload := reply.marshal()
	f := make([]byte, 14+20+8, 14+20+8+len(payload))
	copy(f[0:6], dstMAC)
	copy(f[6:12], VirtualMAC)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_IP)
	ip := f[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+8+len(payload)))
	src, dst := WireserverIP.As4(), dstIP.As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:12], ipChecksum(ip))
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:2], DHCPServerPort)
	binary.BigEndian.PutUint16(udp[2:4], DHCPClientPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(8+len(payload)))
	// UDP checksum 0: none, which IPv4 allows.
	return append(f, payload...)
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i : i+2]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// serveDHCP answers DHCP on every VM port, each VM about its own NIC.
func (s *server) serveDHCP(f *Fabric) error {
	spec := f.Spec()
	ports := map[string]bool{}
	for _, v := range spec.VMs {
		ports[f.portOf(v)] = true
	}
	for _, port := range slices.Sorted(func(yield func(string) bool) {
		for p := range ports {
			if !yield(p) {
				return
			}
		}
	}) {
		c, err := openPacketConn(f.FabricNetNS(), port)
		if err != nil {
			return err
		}
		s.closers = append(s.closers, c)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			buf := make([]byte, 2048)
			for {
				n, err := c.read(buf)
				if errors.Is(err, os.ErrClosed) {
					return
				}
				if err != nil {
					continue
				}
				req := dhcpRequestOf(buf[:n])
				if req == nil {
					continue
				}
				// The VM whose NIC has the client's MAC, if this port is its.
				spec := f.Spec()
				i := slices.IndexFunc(spec.VMs, func(v VMSpec) bool {
					return slices.Equal(net.HardwareAddr(v.MAC), req.chaddr) && f.portOf(v) == port
				})
				if i < 0 {
					continue
				}
				if reply, ok := dhcpAnswer(spec.VMs[i], req); ok {
					_ = c.write(dhcpFrame(req, reply))
				}
			}
		}()
	}
	return nil
}

// DHCPClientScript is what the lab's VMs do with a lease, as
// systemd-networkd does: put the address on the interface and make the
// default route go through it via the router (both replaced, not added,
// so a renewal re-applies them); when a lease it applied is lost, take its
// address off the interface again. It notes each event, and touches
// nothing outside the VM's namespace (no resolv.conf).
const DHCPClientScript = `#!/bin/sh
# udhcpc calls this with the event in $1 and the lease in the environment.
dir=$(dirname "$0")
case "$1" in
bound|renew)
	ip addr replace "$ip/$mask" dev "$interface"
	for r in $router; do
		ip route replace default via "$r" dev "$interface"
		break
	done
	echo "$ip/$mask" > "$dir/lease"
	;;
deconfig)
	# The lease is lost (udhcpc also says deconfig when it starts, with
	# no lease applied yet: nothing to undo then).
	if [ -f "$dir/lease" ]; then
		ip addr del "$(cat "$dir/lease")" dev "$interface"
		rm -f "$dir/lease"
	fi
	;;
esac
# Noted once applied: a waiter then sees the lease in force.
echo "$1 $interface $ip/$mask $router" >> "$(dirname "$0")/events"
`

// DHCPClient is a VM's DHCP client: busybox's udhcpc (scripts/setup.sh
// installs it) in the VM's namespace, running DHCPClientScript.
type DHCPClient struct {
	NetNS string
	Iface string
	dir   string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// StartDHCPClient starts a DHCP client on iface in a VM's namespace, its
// script and event log in dir, and waits for its first lease.
func StartDHCPClient(ns, iface, dir string) (*DHCPClient, error) {
	c := &DHCPClient{NetNS: ns, Iface: iface, dir: dir}
	if err := os.WriteFile(filepath.Join(dir, "dhcp.script"), []byte(DHCPClientScript), 0o755); err != nil {
		return nil, err
	}
	if err := c.start(iface); err != nil {
		return nil, err
	}
	if err := c.WaitLeases(1, 10*time.Second); err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	return c, nil
}

func (c *DHCPClient) start(iface string) error {
	bin, err := exec.LookPath("udhcpc")
	if err != nil {
		return fmt.Errorf("start a DHCP client: udhcpc not installed (scripts/setup.sh installs it): %w", err)
	}
	// A started client has applied no lease yet; one restarted keeps what
	// its predecessor applied, as networkd does.
	_ = os.Remove(filepath.Join(c.dir, "lease"))
	// -f: stay in the foreground; -t/-T/-A: retry fast, as a test waits.
	cmd := exec.Command("nsenter", "--net="+netns.Path(c.NetNS), "--", bin,
		"-f", "-i", iface, "-s", filepath.Join(c.dir, "dhcp.script"), "-t", "5", "-T", "1", "-A", "1")
	log, err := os.OpenFile(filepath.Join(c.dir, "udhcpc.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start udhcpc on %s in netns %s: %w", iface, c.NetNS, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.mu.Lock()
	c.cmd, c.done, c.Iface = cmd, done, iface
	c.mu.Unlock()
	return nil
}

// Events returns the script's calls so far, "EVENT IFACE IP/BITS ROUTER"
// each.
func (c *DHCPClient) Events() []string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "events"))
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// Count counts the script's calls for events ("bound", "renew",
// "deconfig", "leasefail", "nak").
func (c *DHCPClient) Count(events ...string) int {
	n := 0
	for _, e := range c.Events() {
		if ev, _, _ := strings.Cut(e, " "); slices.Contains(events, ev) {
			n++
		}
	}
	return n
}

// Leases counts the leases the client applied (bound and renew events).
func (c *DHCPClient) Leases() int { return c.Count("bound", "renew") }

// WaitLeases waits until the client has applied n leases in all.
func (c *DHCPClient) WaitLeases(n int, timeout time.Duration) error {
	return c.Wait(n, timeout, "bound", "renew")
}

// Wait waits until the script was called n times in all for events.
func (c *DHCPClient) Wait(n int, timeout time.Duration, events ...string) error {
	deadline := time.Now().Add(timeout)
	for c.Count(events...) < n {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(c.dir, "udhcpc.log"))
			return fmt.Errorf("DHCP client on %s in netns %s: %d %v events after %v, want %d; events %q; log:\n%s", c.Iface, c.NetNS, c.Count(events...), events, timeout, n, c.Events(), log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// Renew makes the client renew its lease now, as `networkctl renew` or a
// DHCP client's restart does (Azure's infinite lease is never renewed
// otherwise). Equivalent to: kill -USR1 <udhcpc>.
func (c *DHCPClient) Renew() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd.Process.Signal(syscall.SIGUSR1)
}

// Restart stops the client and starts it again on iface: a restarted
// network manager, or one told to use another interface.
func (c *DHCPClient) Restart(iface string) error {
	if err := c.Stop(); err != nil {
		return err
	}
	return c.start(iface)
}

// Stop ends the client; it keeps its address (udhcpc releases only with
// -R), as a network manager's stop does.
func (c *DHCPClient) Stop() error {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	return nil
}
