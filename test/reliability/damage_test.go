package reliability

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/store"
)

// TestStateDamage replaces the state file of a node with live pods by
// what crashes, disks and operators leave behind, then uses the node
// through the real binary. The plugin must say what it found, rebuild the
// state from the kernel and the pool source, and never hand out an
// address a live pod still has: the whole rest of the pool is handed out,
// the next ADD finds it exhausted, and the node holds exactly its pods.
func TestStateDamage(t *testing.T) {
	cases := []struct {
		name string
		// damage returns the file's new content from the healthy one.
		damage func(t *testing.T, healthy []byte) []byte
		// said is what stderr must report (empty: nothing to report,
		// the file is not damaged).
		said string
		// delFirst: the first command after the damage is a DEL of a
		// live pod, not an ADD.
		delFirst bool
	}{
		{"truncated", func(_ *testing.T, b []byte) []byte { return b[:len(b)/2] }, "not valid JSON", false},
		{"truncated-then-del", func(_ *testing.T, b []byte) []byte { return b[:len(b)/3] }, "not valid JSON", true},
		{"empty", func(*testing.T, []byte) []byte { return nil }, "(empty)", false},
		{"whitespace", func(*testing.T, []byte) []byte { return []byte("\n\n  \n") }, "(empty)", false},
		{"nul-filled", func(_ *testing.T, b []byte) []byte { return make([]byte, 4096) }, "(contains NUL bytes)", false},
		{"nul-tail", func(_ *testing.T, b []byte) []byte { return append(b[:len(b)-40:len(b)-40], make([]byte, 512)...) }, "(contains NUL bytes)", true},
		{"not-json", func(*testing.T, []byte) []byte { return []byte("<state>lost</state>") }, "not valid JSON", false},
		{"wrong-schema", func(*testing.T, []byte) []byte { return []byte(`{"version":1,"allocations":["10.0.0.16"]}`) }, "does not match the state schema", false},
		{"endpoint-without-allocation", func(t *testing.T, b []byte) []byte {
			return edit(t, b, func(m map[string]any) {
				allocs := m["allocations"].(map[string]any)
				for k := range allocs {
					delete(allocs, k)
					return
				}
			})
		}, "(inconsistent)", false},
		{"allocation-under-wrong-key", func(t *testing.T, b []byte) []byte {
			return edit(t, b, func(m map[string]any) {
				allocs := m["allocations"].(map[string]any)
				for k, v := range allocs {
					delete(allocs, k)
					allocs["10.0.0.99"] = v
					return
				}
			})
		}, "(inconsistent)", true},
		{"container-holds-two-addresses", func(t *testing.T, b []byte) []byte {
			return edit(t, b, func(m map[string]any) {
				allocs := m["allocations"].(map[string]any)
				var first map[string]any
				for _, v := range allocs {
					first = v.(map[string]any)
					break
				}
				dup := map[string]any{}
				for k, v := range first {
					dup[k] = v
				}
				dup["ip"] = "10.0.0.30"
				allocs["10.0.0.30"] = dup
			})
		}, "(inconsistent)", false},
		// A newer version's file is not damage: see TestNewerStateRefused
		// in test/e2e.
		{"unknown-version", func(t *testing.T, b []byte) []byte {
			return edit(t, b, func(m map[string]any) { delete(m, "version") })
		}, "unknown format version 0", false},
		// Valid and self-consistent, but from before the live pods were
		// added (a copy restored by hand, a snapshot of the wrong node):
		// nothing can tell it is damaged, and still no live pod's address
		// may be given away.
		{"stale-but-consistent", func(t *testing.T, b []byte) []byte {
			return edit(t, b, func(m map[string]any) {
				m["allocations"] = map[string]any{}
				m["endpoints"] = map[string]any{}
			})
		}, "", false},
	}
	for _, mode := range []string{datapath.ModeBridge, datapath.ModeTransparent} {
		t.Run(mode, func(t *testing.T) {
			l := newLab(t, labOpts{vms: 1, secondaries: 8, mode: mode})
			n := l.vms[0]
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) { damageCase(t, n, tc.damage, tc.said, tc.delFirst) })
			}
		})
	}
}

func edit(t *testing.T, b []byte, fn func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func damageCase(t *testing.T, n *node, damage func(*testing.T, []byte) []byte, said string, delFirst bool) {
	// A node with three live pods and a healthy state, and no leftovers
	// of the previous case.
	for _, d := range []string{n.stateDir()} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	n.gc(t, nil)
	var live []*pod
	for i := 0; i < 3; i++ {
		live = append(live, n.addPod(t, fmt.Sprintf("%s-live%d", short(t), i)))
	}
	path := filepath.Join(n.stateDir(), store.FileName)
	healthy, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	damaged := damage(t, healthy)
	if err := os.WriteFile(path, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	logBefore, _ := os.ReadFile(n.logFile())

	var first outcome
	if delFirst {
		first = n.del(t, live[0].id)
		if !first.ok() {
			t.Fatalf("DEL %s on the damaged state: %s", live[0].id, first)
		}
		live = live[1:]
	}
	// Every free address of the pool, one ADD each.
	used := map[netip.Addr]string{}
	for _, p := range live {
		used[p.ip] = p.id
	}
	free := len(n.spec.SecondaryIPs) - len(live)
	var added []*pod
	for i := 0; i < free; i++ {
		p := n.newPod(t, fmt.Sprintf("%s-new%d", short(t), i))
		o := n.add(t, p)
		if i == 0 && !delFirst {
			first = o
		}
		if !o.ok() {
			t.Fatalf("ADD %d of %d free addresses: %s", i+1, free, o)
		}
		if other, ok := used[p.ip]; ok {
			t.Errorf("ADD %s was given %s, which %s still has", p.id, p.ip, other)
		}
		used[p.ip] = p.id
		added = append(added, p)
	}
	extra := n.newPod(t, short(t)+"-extra")
	if o := n.add(t, extra); o.ok() || o.cniErr == nil || o.cniErr.Code != 11 {
		t.Errorf("ADD with the pool used up: %s, want CNI error 11 (exhausted)", o)
	}

	if said == "" {
		// Nothing told the plugin the state was stale; the log says
		// which addresses it kept away from new pods, and the doctor
		// records the pods again.
		log, _ := os.ReadFile(n.logFile())
		if !strings.Contains(string(log[len(logBefore):]), "pods hold addresses the state does not record") {
			t.Errorf("plugin log does not name the unrecorded addresses")
		}
		found, _, code := n.doctorKinds(t, "doctor")
		for _, p := range live {
			if !slices.Contains(found, "unrecorded-attachment "+p.id+"/eth0") {
				t.Errorf("doctor did not find %s unrecorded: %v", p.id, found)
			}
		}
		if code != 1 {
			t.Errorf("doctor exited %d, want 1", code)
		}
		if _, left, code := n.doctorKinds(t, "doctor", "--fix"); code != 0 || len(left) != 0 {
			t.Errorf("doctor --fix: exit %d, left %v", code, left)
		}
	}

	// What the plugin said, where it kept the damaged file.
	logAfter, _ := os.ReadFile(n.logFile())
	newLog := string(logAfter[len(logBefore):])
	if said != "" {
		if !strings.Contains(first.stderr, said) || !strings.Contains(first.stderr, "rebuilt state from the kernel") {
			t.Errorf("first command's stderr %q, want it to say %q and that the state was rebuilt", first.stderr, said)
		}
		if !strings.Contains(newLog, "state file damaged") {
			t.Errorf("plugin log does not report the damage:\n%s", newLog)
		}
		v := n.snapshot(t)
		if len(v.damaged) != 1 {
			t.Errorf("damaged copies %v, want one", v.damaged)
		} else if b, _ := os.ReadFile(filepath.Join(n.stateDir(), v.damaged[0])); !bytes.Equal(b, damaged) {
			t.Errorf("damaged copy %s differs from the damaged file", v.damaged[0])
		}
	}
	all := append(append([]*pod(nil), live...), added...)
	for _, p := range n.expect(n.snapshot(t), all) {
		t.Error(p)
	}
	var pairs [][2]*pod
	for _, p := range added {
		pairs = append(pairs, [2]*pod{p, live[len(live)-1]})
	}
	for _, f := range pingAll(pairs) {
		t.Error(f)
	}
	// Everything goes away again.
	for _, p := range all {
		n.mustDel(t, p.id)
	}
	for _, p := range n.expect(n.snapshot(t), nil) {
		t.Error("after deleting every pod:", p)
	}
}

// short is the last element of the test's name, for container IDs.
func short(t *testing.T) string {
	parts := strings.Split(t.Name(), "/")
	s := parts[len(parts)-1]
	if len(s) > 24 {
		s = s[:24]
	}
	return s
}
