package reliability

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/netns"
)

// rawConn is an AF_PACKET socket on a namespace's eth0: it sends whole
// Ethernet frames as written and sees every frame the interface receives.
type rawConn struct {
	fd      int
	ifindex int
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openRaw opens a raw socket on eth0 inside the namespace ns (a name).
func openRaw(t *testing.T, ns string) *rawConn {
	t.Helper()
	c := &rawConn{fd: -1}
	err := netns.Do(ns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c.ifindex = ifi.Index
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		c.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		t.Fatalf("raw socket in %s: %v", ns, err)
	}
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(c.fd) })
	return c
}

// send writes frames, a few milliseconds apart.
func (c *rawConn) send(t *testing.T, frames ...[]byte) {
	t.Helper()
	for _, f := range frames {
		if _, err := unix.Write(c.fd, f); err != nil {
			t.Fatalf("send frame: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// capture collects the frames the interface receives (not those it sends)
// until stop is called.
type capture struct {
	mu     sync.Mutex
	frames [][]byte
	done   chan struct{}
	wg     sync.WaitGroup
}

func (c *rawConn) capture() *capture {
	cp := &capture{done: make(chan struct{})}
	cp.wg.Add(1)
	go func() {
		defer cp.wg.Done()
		buf := make([]byte, 65536)
		for {
			select {
			case <-cp.done:
				return
			default:
			}
			n, from, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil {
				continue // timeout
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			cp.mu.Lock()
			cp.frames = append(cp.frames, append([]byte(nil), buf[:n]...))
			cp.mu.Unlock()
		}
	}()
	return cp
}

// stop ends the capture and returns the frames matching.
func (cp *capture) stop(match func(f []byte) bool) [][]byte {
	close(cp.done)
	cp.wg.Wait()
	var out [][]byte
	for _, f := range cp.frames {
		if match(f) {
			out = append(out, f)
		}
	}
	return out
}

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func ether(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	f := make([]byte, 14, 14+len(payload))
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], typ)
	return append(f, payload...)
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// ipv4 builds an IPv4 packet.
func ipv4(src, dst netip.Addr, proto byte, payload []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[4:], 0x4242)
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	binary.BigEndian.PutUint16(h[10:], checksum(h))
	return append(h, payload...)
}

// echoRequest is an ICMP echo request carrying marker.
func echoRequest(marker []byte) []byte {
	m := make([]byte, 8, 8+len(marker))
	m[0] = 8
	binary.BigEndian.PutUint16(m[4:], 0x7777)
	binary.BigEndian.PutUint16(m[6:], 1)
	m = append(m, marker...)
	binary.BigEndian.PutUint16(m[2:], checksum(m))
	return m
}

// pingFrame is an Ethernet frame with an ICMP echo request.
func pingFrame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, marker []byte) []byte {
	return ether(dstMAC, srcMAC, unix.ETH_P_IP, ipv4(src, dst, unix.IPPROTO_ICMP, echoRequest(marker)))
}

// arpFrame is an Ethernet frame with an ARP packet (op 1 request, 2 reply).
func arpFrame(dstMAC, srcMAC net.HardwareAddr, op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	a := make([]byte, 28)
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], unix.ETH_P_IP)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], op)
	s, d := spa.As4(), tpa.As4()
	copy(a[8:14], sha)
	copy(a[14:18], s[:])
	copy(a[18:24], tha)
	copy(a[24:28], d[:])
	return ether(dstMAC, srcMAC, unix.ETH_P_ARP, a)
}

// Frame fields.
func frameSrcMAC(f []byte) net.HardwareAddr { return net.HardwareAddr(f[6:12]) }
func isIPv4(f []byte) bool                  { return len(f) >= 34 && binary.BigEndian.Uint16(f[12:14]) == unix.ETH_P_IP }
func ipSrc(f []byte) netip.Addr             { a, _ := netip.AddrFromSlice(f[26:30]); return a }
func ipDst(f []byte) netip.Addr             { a, _ := netip.AddrFromSlice(f[30:34]); return a }
func hasMarker(f []byte, m []byte) bool     { return bytes.Contains(f, m) }
