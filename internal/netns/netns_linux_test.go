package netns

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"slices"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

func uniqueName(t *testing.T) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "vns" + hex.EncodeToString(b)
}

func netnsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestLifecycle: Create, Exists, List, Do and Delete behave as `ip netns`
// does, and Do runs its function in the namespace and nowhere else.
func TestLifecycle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	name := uniqueName(t)
	t.Cleanup(func() { _ = Delete(name) })
	if Exists(name) {
		t.Fatalf("%s exists before Create", name)
	}
	for i := 0; i < 2; i++ { // the second Create is a no-op
		if err := Create(name); err != nil {
			t.Fatalf("Create #%d: %v", i+1, err)
		}
	}
	if !Exists(name) {
		t.Fatal("Exists after Create = false")
	}
	if got, err := List(name[:5]); err != nil || !slices.Contains(got, name) {
		t.Fatalf("List(%q) = %v, %v; want it to hold %s", name[:5], got, err, name)
	}
	self := netnsInode(t, "/proc/self/ns/net")
	if netnsInode(t, Path(name)) == self {
		t.Fatal("the new namespace is the test's own")
	}

	// A link made inside Do exists there and not here.
	link := "vnsl" + name[3:9]
	err := Do(name, func() error {
		if netnsInode(t, "/proc/thread-self/ns/net") != netnsInode(t, Path(name)) {
			t.Error("Do's function does not run in the namespace")
		}
		return netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: link}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(link); err == nil {
		t.Fatalf("link %s made inside Do appeared in the test's namespace", link)
	}
	if netnsInode(t, "/proc/thread-self/ns/net") != self {
		t.Fatal("the test's thread was left in the namespace")
	}
	if err := Do(name, func() error { _, err := netlink.LinkByName(link); return err }); err != nil {
		t.Fatalf("link %s not found in the namespace: %v", link, err)
	}

	for i := 0; i < 2; i++ { // deleting a missing namespace is not an error
		if err := Delete(name); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	if Exists(name) {
		t.Fatal("Exists after Delete = true")
	}
	if _, err := os.Stat(Path(name)); !os.IsNotExist(err) {
		t.Fatalf("%s left behind: %v", Path(name), err)
	}
}

func TestCreateRejectsBadNames(t *testing.T) {
	for _, name := range []string{"", "a/b", "../x", ".", ".."} {
		if err := Create(name); err == nil {
			_ = Delete(name)
			t.Errorf("Create(%q) succeeded", name)
		}
	}
}

// TestNetlink: the handle works in the namespace, not the caller's: a link
// made through it is seen there and not here.
func TestNetlink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	name := uniqueName(t)
	if err := Create(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Delete(name) })
	h, err := Netlink(Path(name))
	if err != nil {
		t.Fatalf("Netlink(%s): %v", Path(name), err)
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatalf("add bridge %s through the handle: %v", name, err)
	}
	if _, err := h.LinkByName(name); err != nil {
		t.Errorf("bridge %s not in the namespace: %v", name, err)
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Errorf("bridge %s appeared in the caller's namespace", name)
	}
	if _, err := Netlink("/nonexistent/netns"); err == nil {
		t.Error("Netlink of a missing path: no error")
	}
}
