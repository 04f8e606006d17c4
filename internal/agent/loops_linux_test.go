package agent

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/datapath"
)

// TestLossEvents: which kernel notifications start a reconcile pass. The
// plugins' own work (DEL removing a host veth, ADD creating links) must
// not; every loss the reconciler repairs must.
func TestLossEvents(t *testing.T) {
	veth := datapath.HostIfPrefix + "0123456789ab"
	for _, tc := range []struct {
		name    string
		msgType uint16
		link    string
		flags   uint32
		master  int
		want    bool
	}{
		{"eth0 deleted", unix.RTM_DELLINK, "eth0", 0, 0, true},
		{"bridge deleted", unix.RTM_DELLINK, "azure0", 0, 0, true},
		{"host veth deleted (DEL's work)", unix.RTM_DELLINK, veth, 0, 0, false},
		{"host veth down", unix.RTM_NEWLINK, veth, 0, 5, true},
		{"host veth up", unix.RTM_NEWLINK, veth, unix.IFF_UP, 5, false},
		{"eth0 left the bridge and is down", unix.RTM_NEWLINK, "eth0", 0, 0, true},
		{"eth0 up without master (transparent)", unix.RTM_NEWLINK, "eth0", unix.IFF_UP, 0, false},
		{"eth0 enslaved while coming up", unix.RTM_NEWLINK, "eth0", 0, 4, false},
		{"bridge down", unix.RTM_NEWLINK, "azure0", 0, 0, true},
	} {
		if got := linkLoss(tc.msgType, tc.link, tc.flags, tc.master); got != tc.want {
			t.Errorf("%s: linkLoss = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name    string
		msgType uint16
		family  int
		want    bool
	}{
		{"FDB entry deleted", unix.RTM_DELNEIGH, unix.AF_BRIDGE, true},
		{"FDB entry added", unix.RTM_NEWNEIGH, unix.AF_BRIDGE, false},
		{"ARP entry expired", unix.RTM_DELNEIGH, unix.AF_INET, false},
	} {
		if got := neighLoss(tc.msgType, tc.family); got != tc.want {
			t.Errorf("%s: neighLoss = %v, want %v", tc.name, got, tc.want)
		}
	}
	for typ, want := range map[nftables.MonitorEventType]bool{
		nftables.MonitorEventTypeDelTable:   true,
		nftables.MonitorEventTypeDelChain:   true,
		nftables.MonitorEventTypeDelRule:    true,
		nftables.MonitorEventTypeDelSet:     true,
		nftables.MonitorEventTypeDelSetElem: true,
		nftables.MonitorEventTypeOOB:        true,
		nftables.MonitorEventTypeNewTable:   false,
		nftables.MonitorEventTypeNewRule:    false,
		nftables.MonitorEventTypeNewSetElem: false,
	} {
		if got := nftLoss(typ); got != want {
			t.Errorf("nftLoss(%v) = %v, want %v", typ, got, want)
		}
	}
}

// TestFollowResubscribes: when the kernel ends a subscription (its channel
// closes), follow asks for a pass, since events were lost, and subscribes
// again; when the agent stops, it ends the subscription and returns.
func TestFollowResubscribes(t *testing.T) {
	a := New(Config{StateDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subscribed := make(chan chan struct{}, 4)
	notified := make(chan struct{}, 16)
	calls := 0
	subscribe := func(done chan struct{}, onErr func(error)) (<-chan bool, error) {
		calls++
		ch := make(chan bool, 2)
		if calls == 1 {
			ch <- false // not a loss
			ch <- true  // a loss
			close(ch)   // then the kernel ends it (ENOBUFS)
		} else {
			go func() { <-done; close(ch) }()
		}
		subscribed <- done
		return ch, nil
	}
	finished := make(chan struct{})
	go func() {
		a.follow(ctx, "test", func() { notified <- struct{}{} }, subscribe)
		close(finished)
	}()
	first := <-subscribed
	second := <-subscribed // the subscription again, after it ended
	select {
	case <-first:
	default:
		t.Errorf("the ended subscription's done channel is still open: its socket would leak")
	}
	if n := len(notified); n != 2 {
		t.Errorf("%d passes asked for, want 2 (the loss, and the events lost while resubscribing)", n)
	}
	cancel()
	<-finished
	select {
	case <-second:
	default:
		t.Errorf("after the agent stopped, the subscription's done channel is still open")
	}
}
