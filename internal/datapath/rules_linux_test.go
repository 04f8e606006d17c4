package datapath

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"

	"github.com/vnetcni/vnetcni/internal/golden"
	"github.com/vnetcni/vnetcni/internal/netns"
	"github.com/vnetcni/vnetcni/internal/nft/nfttest"
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func testRules(mode string) Rules {
	return Rules{
		Network:   "azure",
		Mode:      mode,
		Master:    "eth0",
		Bridge:    "azure0",
		NICMAC:    mustMAC("00:0d:3a:6e:18:25"),
		PrimaryIP: netip.MustParseAddr("10.0.0.4"),
		SNAT:      true,
		NonMasquerade: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"),
			netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("10.0.0.0/20"),
			netip.MustParsePrefix("168.63.129.16/32"),
		},
	}
}

var testPods = []PodElem{
	{HostIf: "azv0123456789ab", MAC: mustMAC("02:00:00:00:00:05"), IP: netip.MustParseAddr("10.0.0.5")},
	{HostIf: "azvba9876543210", MAC: mustMAC("02:00:00:00:00:06"), IP: netip.MustParseAddr("10.0.0.6")},
}

// TestRulesGolden programs each mode's tables in a throwaway namespace and
// compares what the kernel holds, as `nft list` prints it, with a golden file.
func TestRulesGolden(t *testing.T) {
	for _, tc := range []struct {
		golden string
		rules  func() Rules
	}{
		{"bridge", func() Rules { return testRules(ModeBridge) }},
		{"transparent", func() Rules { return testRules(ModeTransparent) }},
		{"bridge-options", func() Rules {
			r := testRules(ModeBridge)
			r.SNAT, r.AllowWireserver, r.BlockIMDS = false, true, true
			return r
		}},
		{"transparent-options", func() Rules {
			r := testRules(ModeTransparent)
			r.BlockIMDS = true
			return r
		}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			name := tempNetNS(t)
			r := tc.rules()
			c := nftConnIn(t, name)
			if err := r.Program(c, false, nil); err != nil {
				t.Fatalf("Program: %v", err)
			}
			// Programming again must be a no-op that keeps pod elements.
			for _, p := range testPods {
				if err := r.AddPod(c, p); err != nil {
					t.Fatalf("AddPod(%v): %v", p, err)
				}
			}
			if err := r.Program(c, false, nil); err != nil {
				t.Fatalf("Program again: %v", err)
			}
			got := nftList(t, name)
			golden.Check(t, filepath.Join("testdata", "rules-"+tc.golden+".nft"), got)

			// Removing pods removes exactly their elements, twice is fine.
			for _, p := range testPods {
				for i := 0; i < 2; i++ {
					if err := r.DelPod(c, p); err != nil {
						t.Fatalf("DelPod(%v) #%d: %v", p, i, err)
					}
				}
			}
			left, err := r.Pods(c)
			if err != nil {
				t.Fatal(err)
			}
			if len(left) != 0 {
				t.Errorf("after DelPod, pods left: %v", left)
			}
		})
	}
}

func TestAddPodReplacesStaleMapping(t *testing.T) {
	name := tempNetNS(t)
	r := testRules(ModeBridge)
	c := nftConnIn(t, name)
	if err := r.Program(c, false, nil); err != nil {
		t.Fatal(err)
	}
	stale := PodElem{HostIf: "azvdeadbeef0000", MAC: mustMAC("02:aa:aa:aa:aa:aa"), IP: testPods[0].IP}
	if err := r.AddPod(c, stale); err != nil {
		t.Fatal(err)
	}
	if err := r.AddPod(c, testPods[0]); err != nil {
		t.Fatalf("AddPod over a stale mapping: %v", err)
	}
	ok, err := r.HasPod(c, testPods[0])
	if err != nil || !ok {
		t.Errorf("HasPod after replacing stale mapping = %v, %v; want true", ok, err)
	}
}

func tempNetNS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	name := "vdt" + randHex(4)
	if err := netns.Create(name); err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { _ = netns.Delete(name) })
	return name
}

func nftConnIn(t *testing.T, name string) *nftables.Conn { return nfttest.Conn(t, name) }

var counterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

func nftList(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+netns.Path(name), "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v\n%s", err, out)
	}
	return counterRE.ReplaceAllString(string(out), "counter packets 0 bytes 0")
}

func randHex(n int) string {
	b := make([]byte, n)
	f, _ := os.Open("/dev/urandom")
	defer f.Close()
	_, _ = f.Read(b)
	const hx = "0123456789abcdef"
	out := make([]byte, 0, 2*n)
	for _, x := range b {
		out = append(out, hx[x>>4], hx[x&15])
	}
	return string(out)[:n]
}

// TestElementsReadBack: what AddPod puts in the kernel is exactly what
// PodElements describes and Elements reads back, in each mode; DeleteElement
// removes one element and nothing else. The doctor relies on all three.
func TestElementsReadBack(t *testing.T) {
	for _, mode := range []string{ModeBridge, ModeTransparent} {
		t.Run(mode, func(t *testing.T) {
			name := tempNetNS(t)
			r := testRules(mode)
			c := nftConnIn(t, name)
			if _, present, err := r.Elements(c); err != nil || present {
				t.Fatalf("Elements before Program = present %v, %v; want absent", present, err)
			}
			if err := r.Program(c, false, nil); err != nil {
				t.Fatal(err)
			}
			var want []Element
			for _, p := range testPods {
				if err := r.AddPod(c, p); err != nil {
					t.Fatal(err)
				}
				want = append(want, PodElements(mode, p)...)
			}
			byID := func(es []Element) map[string]string {
				m := map[string]string{}
				for _, e := range es {
					m[e.ID()] = e.String()
				}
				return m
			}
			got, present, err := r.Elements(c)
			if err != nil || !present {
				t.Fatalf("Elements = present %v, %v; want present", present, err)
			}
			if d := cmp.Diff(byID(want), byID(got)); d != "" {
				t.Errorf("Elements after AddPod (-PodElements +kernel):\n%s", d)
			}
			gone := want[0]
			if err := r.DeleteElement(c, gone); err != nil {
				t.Fatalf("DeleteElement(%s): %v", gone, err)
			}
			got, _, err = r.Elements(c)
			if err != nil {
				t.Fatal(err)
			}
			wantLeft := byID(want)
			delete(wantLeft, gone.ID())
			if d := cmp.Diff(wantLeft, byID(got)); d != "" {
				t.Errorf("Elements after DeleteElement(%s) (-want +got):\n%s", gone, d)
			}
		})
	}
}

// TestDamage: an intact network reports nothing; each way a firewall
// manager breaks it is reported; Program repairs it, keeping pod elements.
func TestDamage(t *testing.T) {
	for _, mode := range []string{ModeBridge, ModeTransparent} {
		for _, tc := range []struct {
			name, cmd string
		}{
			{"flush-ruleset", "flush ruleset"},
			{"flush-table", "flush table ip " + TableName("azure")},
			{"delete-table", "delete table ip " + TableName("azure")},
			{"flush-chain", "flush chain ip " + TableName("azure") + " postrouting"},
			{"flush-set", "flush set ip " + TableName("azure") + " nomasq"},
		} {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				name := tempNetNS(t)
				r := testRules(mode)
				c := nftConnIn(t, name)
				if d, err := r.Damage(c); err != nil || len(d) == 0 {
					t.Fatalf("Damage before Program = %q, %v; want the tables missing", d, err)
				}
				if err := r.Program(c, false, nil); err != nil {
					t.Fatal(err)
				}
				if err := r.AddPod(c, testPods[0]); err != nil {
					t.Fatal(err)
				}
				if d, err := r.Damage(c); err != nil || len(d) != 0 {
					t.Fatalf("Damage of intact rules = %q, %v; want none", d, err)
				}
				// Tables recreated come last in the listing: compare lines.
				intact := sortedLines(nftList(t, name))
				nftRun(t, name, tc.cmd)
				d, err := r.Damage(c)
				if err != nil || len(d) == 0 {
					t.Fatalf("Damage after %q = %q, %v; want some", tc.cmd, d, err)
				}
				if err := r.Program(c, false, nil); err != nil {
					t.Fatal(err)
				}
				if err := r.AddPod(c, testPods[0]); err != nil {
					t.Fatal(err)
				}
				if d, err := r.Damage(c); err != nil || len(d) != 0 {
					t.Errorf("Damage after repair = %q, %v; want none", d, err)
				}
				if got := sortedLines(nftList(t, name)); got != intact {
					t.Errorf("after %q and repair the ruleset differs (-intact +repaired):\n%s", tc.cmd, cmp.Diff(intact, got))
				}
			})
		}
	}
}

func sortedLines(s string) string {
	l := strings.Split(s, "\n")
	sort.Strings(l)
	return strings.Join(l, "\n")
}

func nftRun(t *testing.T, name, cmd string) {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+netns.Path(name), "nft", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v\n%s", cmd, err, out)
	}
}
