package reliability

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vnetcni/vnetcni/internal/azure/imds"
	"github.com/vnetcni/vnetcni/internal/azure/nic"
	"github.com/vnetcni/vnetcni/internal/azure/wireserver"
	"github.com/vnetcni/vnetcni/internal/datapath"
	"github.com/vnetcni/vnetcni/internal/store"
	"github.com/vnetcni/vnetcni/lab/fabric"
)

// badPort is where the misbehaving pool sources listen, on the
// wireserver's address inside the fabric.
const badPort = 8080

// badCase is one malformed input: a configuration, an environment or a
// pool source's answer.
type badCase struct {
	name string
	cmd  string // ADD when empty
	// conf edits azure-vnet's configuration (a JSON object); raw replaces
	// it with bytes.
	conf func(m map[string]any)
	raw  []byte
	env  map[string]string // overrides of the CNI environment; "" unsets
	// netns returns CNI_NETNS (the case's pod namespace when nil).
	netns func(t *testing.T, n *node, pod *pod) string
	// code is the CNI error code wanted (0: the command must succeed
	// without touching the node, as VERSION-like answers do).
	code uint
	// say lists what the error message (msg and details) must contain.
	say []string
}

// TestBadInput feeds the real azure-vnet malformed configurations,
// environments and pool-source answers on a node with a live pod. Each
// must fail with the right CNI error code and a message naming the
// problem, and leave the node exactly as it was: the same veths, nftables
// elements, routes, allocations and endpoints, nothing in the case's pod.
func TestBadInput(t *testing.T) {
	l := newLab(t, labOpts{vms: 1, secondaries: 6, mode: datapath.ModeBridge})
	n := l.vms[0]
	live := n.addPod(t, "live")
	l.serve(t, netip.AddrPortFrom(fabric.WireserverIP, badPort), badSources(n))

	cases := badCases(t, n)
	before := n.snapshot(t)
	rejected := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The cached pool is stale and has no free address left, so
			// the case's source is read (a stale pool with free addresses
			// would be used when the source fails).
			update(t, n, func(st *store.State) {
				for _, p := range st.Pools {
					p.ReadAt = time.Time{}
					var held []netip.Addr
					for _, a := range p.Addresses {
						if _, ok := st.Allocations[a.String()]; ok {
							held = append(held, a)
						}
					}
					p.Addresses = held
				}
			})
			pod := n.newPod(t, "bad")
			c := call{cmd: tc.cmd, id: "bad-" + idOf(tc.name), netns: pod.path(), env: tc.env}
			if c.cmd == "" {
				c.cmd = "ADD"
			}
			if len(c.id) > 60 {
				c.id = c.id[:60]
			}
			if tc.netns != nil {
				c.netns = tc.netns(t, n, pod)
			}
			c.conf = confOf(t, n, tc)
			o := n.run(t, c)
			switch {
			case tc.code == 0:
				if o.exit != 0 {
					t.Errorf("got %s, want success", o)
				}
			case o.cniErr == nil:
				t.Errorf("got %s, want CNI error %d", o, tc.code)
			case o.cniErr.Code != tc.code:
				t.Errorf("got CNI error %d %q, want code %d", o.cniErr.Code, o.cniErr.Msg, tc.code)
			default:
				msg := o.cniErr.Msg + " " + o.cniErr.Details
				ok := true
				for _, s := range tc.say {
					if !strings.Contains(msg, s) {
						ok = false
						t.Errorf("message %q does not say %q", msg, s)
					}
				}
				if ok {
					rejected++
				}
			}
			if ifs := podIfaces(t, pod.ns); len(ifs) > 0 {
				t.Errorf("left %v in the pod", ifs)
			}
			if d := diffViews(before, n.snapshot(t)); d != "" {
				t.Errorf("the node changed:\n%s", d)
			}
		})
	}
	answered := 0
	for _, tc := range cases {
		if tc.code == 0 {
			answered++
		}
	}
	t.Logf("%d bad inputs tried: %d rejected with the right CNI error code and a message naming the problem, %d answered as the CNI spec says (no CNI_COMMAND: the plugin's version); the node unchanged after each",
		len(cases), rejected, answered)
	if rejected+answered != len(cases) {
		t.Errorf("%d of %d bad inputs were not handled as they should", len(cases)-rejected-answered, len(cases))
	}

	// The node still works: the live pod is reachable, and the next good
	// ADD refreshes the pool from the real wireserver.
	good := n.addPod(t, "good")
	for _, f := range pingAll([][2]*pod{{good, live}, {live, good}}) {
		t.Error(f)
	}
}

// diffViews says how two views of a node differ in what a failed command
// must not change.
func diffViews(a, b *view) string {
	var out []string
	line := func(f string, x ...any) { out = append(out, fmt.Sprintf(f, x...)) }
	vethsOf := func(v *view) string {
		var s []string
		for name, a := range v.veths {
			s = append(s, name+"="+a.Alias())
		}
		sort.Strings(s)
		return strings.Join(s, " ")
	}
	if x, y := vethsOf(a), vethsOf(b); x != y {
		line("veths: %s -> %s", x, y)
	}
	if x, y := fmt.Sprint(a.elems), fmt.Sprint(b.elems); x != y {
		line("nftables elements: %s -> %s", x, y)
	}
	if x, y := fmt.Sprint(a.routes), fmt.Sprint(b.routes); x != y {
		line("routes: %s -> %s", x, y)
	}
	recs := func(v *view) string {
		if v.stateErr != nil {
			return v.stateErr.Error()
		}
		var s []string
		for k, al := range v.state.Allocations {
			s = append(s, "alloc "+k+"="+al.ContainerID)
		}
		for k, e := range v.state.Endpoints {
			s = append(s, "endpoint "+k+"="+e.IP.String())
		}
		for k, nw := range v.state.Networks {
			s = append(s, "network "+k+"="+nw.Mode+" "+nw.Bridge+" "+nw.Rules)
		}
		sort.Strings(s)
		return strings.Join(s, "; ")
	}
	if x, y := recs(a), recs(b); x != y {
		line("state: %s -> %s", x, y)
	}
	if len(b.tmpFiles) > 0 || len(b.damaged) > len(a.damaged) {
		line("files: %v %v", b.tmpFiles, b.damaged)
	}
	return strings.Join(out, "\n")
}

// confOf is the case's stdin.
func confOf(t *testing.T, n *node, tc badCase) []byte {
	if tc.raw != nil {
		return tc.raw
	}
	var m map[string]any
	if err := json.Unmarshal(n.conf, &m); err != nil {
		t.Fatal(err)
	}
	if tc.conf != nil {
		tc.conf(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ipamOf(m map[string]any) map[string]any { return m["ipam"].(map[string]any) }

// source points the configuration at one of badSources' behaviours.
func source(env, path string) func(map[string]any) {
	return func(m map[string]any) {
		base := fmt.Sprintf("http://%s:%d/%s", fabric.WireserverIP, badPort, path)
		i := ipamOf(m)
		i["timeout"] = "500ms"
		if env == "imds" {
			i["environment"] = "imds"
			i["imdsURL"] = base
		} else {
			i["wireserverURL"] = base + "?comp=nmagent&type=getinterfaceinfov1"
		}
	}
}

func badCases(t *testing.T, n *node) []badCase {
	t.Helper()
	set := func(k string, v any) func(map[string]any) { return func(m map[string]any) { m[k] = v } }
	setIPAM := func(k string, v any) func(map[string]any) { return func(m map[string]any) { ipamOf(m)[k] = v } }
	static := func(kv map[string]any) func(map[string]any) {
		return func(m map[string]any) {
			i := ipamOf(m)
			i["environment"] = "static"
			i["subnet"] = subnet.String()
			i["addresses"] = []string{"10.0.0.40"}
			for k, v := range kv {
				if v == nil {
					delete(i, k)
				} else {
					i[k] = v
				}
			}
		}
	}
	many := func(k int, f func(i int) string) []string {
		var out []string
		for i := 0; i < k; i++ {
			out = append(out, f(i))
		}
		return out
	}
	dir := t.TempDir()
	masBad := filepath.Join(dir, "interfaces.json")
	if err := os.WriteFile(masBad, []byte(`{"Interfaces":[{"MacAddress":"not-a-mac"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	regular := filepath.Join(dir, "regular-file")
	if err := os.WriteFile(regular, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	deep := []byte(`{"cniVersion":"1.1.0","name":"azure","type":"azure-vnet","x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`)

	return []badCase{
		// The configuration.
		{name: "empty stdin", raw: []byte{}, code: 6, say: []string{"unmarshal"}},
		{name: "not JSON", raw: []byte("mode: bridge"), code: 6, say: []string{"unmarshal"}},
		{name: "JSON array", raw: []byte(`[{"name":"azure"}]`), code: 6, say: []string{"unmarshal"}},
		{name: "nested 20000 deep", raw: deep, code: 6, say: []string{"depth"}},
		{name: "no name", conf: func(m map[string]any) { delete(m, "name") }, code: 7, say: []string{"missing network name"}},
		{name: "name with spaces", conf: set("name", "my net"), code: 7, say: []string{"invalid characters", "my net"}},
		{name: "name too long", conf: set("name", strings.Repeat("n", 200)), code: 7, say: []string{"name"}},
		{name: "unknown CNI version", conf: set("cniVersion", "9.9.9"), code: 1, say: []string{"incompatible CNI versions"}},
		{name: "CNI version a number", conf: set("cniVersion", 1.1), code: 6, say: []string{"cniVersion"}},
		{name: "unknown mode", conf: set("mode", "vxlan"), code: 7, say: []string{"mode", "vxlan"}},
		{name: "mode a number", conf: set("mode", 42), code: 7, say: []string{"mode", "wrong type"}},
		{name: "no ipam", conf: func(m map[string]any) { delete(m, "ipam") }, code: 7, say: []string{"ipam.type", "required"}},
		{name: "other ipam", conf: setIPAM("type", "host-local"), code: 7, say: []string{"ipam.type", "host-local"}},
		{name: "ipam a string", conf: set("ipam", "azure-vnet-ipam"), code: 7, say: []string{"ipam", "wrong type"}},
		{name: "unknown environment", conf: setIPAM("environment", "gcp"), code: 7, say: []string{"ipam.environment", "gcp"}},
		{name: "CIDR /33", conf: set("nonMasqueradeCIDRs", []string{"10.0.0.0/33"}), code: 7, say: []string{"nonMasqueradeCIDRs[0]", "10.0.0.0/33"}},
		{name: "IPv6 CIDR", conf: set("nonMasqueradeCIDRs", []string{"10.0.0.0/8", "fd00::/8"}), code: 7, say: []string{"nonMasqueradeCIDRs[1]", "IPv4"}},
		{name: "CIDRs a string", conf: set("nonMasqueradeCIDRs", "10.0.0.0/8"), code: 7, say: []string{"nonMasqueradeCIDRs", "wrong type"}},
		{name: "2000 CIDRs", conf: set("nonMasqueradeCIDRs", many(2000, func(i int) string { return fmt.Sprintf("10.%d.%d.0/24", i/256, i%256) })), code: 7, say: []string{"nonMasqueradeCIDRs", "at most"}},
		{name: "DNS not an address", conf: set("dns", map[string]any{"nameservers": []string{"dns.example"}}), code: 7, say: []string{"dns.nameservers[0]", "dns.example"}},
		{name: "100 DNS servers", conf: set("dns", map[string]any{"nameservers": many(100, func(i int) string { return fmt.Sprintf("10.9.0.%d", i) })}), code: 7, say: []string{"dns.nameservers", "at most"}},
		{name: "bridge name too long", conf: set("bridge", "azure-bridge-0001"), code: 7, say: []string{"bridge", "15 characters"}},
		{name: "bridge is master", conf: func(m map[string]any) { m["bridge"], m["master"] = "eth0", "eth0" }, code: 7, say: []string{"bridge", "master"}},
		{name: "master with slash", conf: set("master", "eth/0"), code: 7, say: []string{"master", "eth/0"}},
		{name: "master does not exist", conf: set("master", "eth9"), code: 7, say: []string{"master", "eth9"}},
		{name: "enableSnat a string", conf: set("enableSnat", "yes"), code: 7, say: []string{"enableSnat", "wrong type"}},
		{name: "refresh not a duration", conf: setIPAM("refreshInterval", "soon"), code: 7, say: []string{"ipam.refreshInterval", "soon"}},
		{name: "refresh 1000h", conf: setIPAM("refreshInterval", "1000h"), code: 7, say: []string{"ipam.refreshInterval", "between"}},
		{name: "timeout 1ns", conf: setIPAM("timeout", "1ns"), code: 7, say: []string{"ipam.timeout", "between"}},
		{name: "wireserver URL ftp", conf: setIPAM("wireserverURL", "ftp://168.63.129.16/"), code: 7, say: []string{"ipam.wireserverURL", "http"}},
		{name: "IMDS URL not a URL", conf: setIPAM("imdsURL", "::"), code: 7, say: []string{"ipam.imdsURL"}},
		{name: "static without subnet", conf: static(map[string]any{"subnet": nil}), code: 7, say: []string{"ipam.subnet", "required"}},
		{name: "static /31", conf: static(map[string]any{"subnet": "10.0.0.0/31", "addresses": []string{"10.0.0.1"}}), code: 7, say: []string{"ipam.subnet", "too small"}},
		{name: "static address outside", conf: static(map[string]any{"addresses": []string{"192.168.1.5"}}), code: 7, say: []string{"ipam.addresses[0]", "outside"}},
		{name: "static address twice", conf: static(map[string]any{"addresses": []string{"10.0.0.40", "10.0.0.40"}}), code: 7, say: []string{"ipam.addresses[1]", "twice"}},
		{name: "static gateway", conf: static(map[string]any{"addresses": []string{"10.0.0.1"}}), code: 7, say: []string{"ipam.addresses[0]", "gateway"}},
		{name: "static 5000 addresses", conf: static(map[string]any{"addresses": many(5000, func(i int) string { return "10.0.0.40" })}), code: 7, say: []string{"ipam.addresses", "at most"}},
		{name: "static primary outside", conf: static(map[string]any{"primaryIP": "10.9.9.9"}), code: 7, say: []string{"ipam.primaryIP", "10.9.9.9"}},
		{name: "GC with valid attachments not a list", cmd: "GC", conf: set("cni.dev/valid-attachments", map[string]any{}), code: 7, say: []string{"cni.dev/valid-attachments"}},
		{name: "CHECK without prevResult", cmd: "CHECK", code: 7, say: []string{"prevResult"}},
		{name: "CHECK with garbage prevResult", cmd: "CHECK", conf: set("prevResult", map[string]any{"ips": "all"}), code: 7, say: []string{"prevResult"}},

		// The environment.
		{name: "no CNI_COMMAND", env: map[string]string{"CNI_COMMAND": ""}, code: 0},
		{name: "unknown CNI_COMMAND", env: map[string]string{"CNI_COMMAND": "FROB"}, code: 4, say: []string{"FROB"}},
		{name: "lower-case command", env: map[string]string{"CNI_COMMAND": "add"}, code: 4, say: []string{"add"}},
		{name: "no CNI_CONTAINERID", env: map[string]string{"CNI_CONTAINERID": ""}, code: 4, say: []string{"CNI_CONTAINERID"}},
		{name: "CNI_CONTAINERID with a slash", env: map[string]string{"CNI_CONTAINERID": "abc/def"}, code: 4, say: []string{"containerID", "abc/def"}},
		{name: "CNI_CONTAINERID of 300 characters", env: map[string]string{"CNI_CONTAINERID": strings.Repeat("c", 300)}, code: 4, say: []string{"CNI_CONTAINERID", "characters"}},
		{name: "no CNI_IFNAME", env: map[string]string{"CNI_IFNAME": ""}, code: 4, say: []string{"CNI_IFNAME"}},
		{name: "CNI_IFNAME too long", env: map[string]string{"CNI_IFNAME": "eth0123456789abc"}, code: 4, say: []string{"interface name is too long"}},
		{name: "CNI_IFNAME with a colon", env: map[string]string{"CNI_IFNAME": "eth0:1"}, code: 4, say: []string{"interface name"}},
		{name: "CNI_IFNAME exists in the pod", env: map[string]string{"CNI_IFNAME": "lo"}, code: 4, say: []string{"CNI_IFNAME", "lo", "exists"}},
		{name: "no CNI_NETNS", env: map[string]string{"CNI_NETNS": ""}, code: 4, say: []string{"CNI_NETNS"}},
		{name: "CNI_NETNS does not exist", netns: func(*testing.T, *node, *pod) string { return "/run/netns/vrl-no-such-ns" }, code: 8, say: []string{"CNI_NETNS", "vrl-no-such-ns"}},
		{name: "CNI_NETNS relative", netns: func(*testing.T, *node, *pod) string { return "netns/pod" }, code: 8, say: []string{"CNI_NETNS", "netns/pod"}},
		{name: "CNI_NETNS a file", netns: func(*testing.T, *node, *pod) string { return regular }, code: 8, say: []string{"not a network namespace"}},
		{name: "CNI_NETNS a directory", netns: func(*testing.T, *node, *pod) string { return dir }, code: 8, say: []string{"not a network namespace"}},
		{name: "CNI_NETNS /dev/null", netns: func(*testing.T, *node, *pod) string { return "/dev/null" }, code: 8, say: []string{"not a network namespace"}},
		{name: "CNI_NETNS a mount namespace", netns: func(*testing.T, *node, *pod) string { return "/proc/self/ns/mnt" }, code: 8, say: []string{"not a network namespace"}},
		{name: "CNI_NETNS the plugin's own", netns: func(*testing.T, *node, *pod) string { return "/proc/self/ns/net" }, code: 8, say: []string{"plugin's own"}},
		{name: "CNI_ARGS without =", env: map[string]string{"CNI_ARGS": "K8S_POD_NAME"}, code: 4, say: []string{"CNI_ARGS", "K8S_POD_NAME"}},
		{name: "CNI_ARGS empty key", env: map[string]string{"CNI_ARGS": "=pod"}, code: 4, say: []string{"CNI_ARGS"}},
		{name: "no CNI_PATH", env: map[string]string{"CNI_PATH": ""}, code: 4, say: []string{"CNI_PATH"}},
		{name: "DEL without CNI_CONTAINERID", cmd: "DEL", env: map[string]string{"CNI_CONTAINERID": ""}, code: 4, say: []string{"CNI_CONTAINERID"}},

		// The pool source's answers.
		{name: "wireserver malformed XML", conf: source("wireserver", "bad-xml"), code: 11, say: []string{"wireserver", "decode"}},
		{name: "wireserver other MAC", conf: source("wireserver", "other-mac"), code: 11, say: []string{"no interface with MAC", nic.FormatAzureMAC(net.HardwareAddr(n.spec.MAC))}},
		{name: "wireserver empty pool", conf: source("wireserver", "empty"), code: 11, say: []string{"no free address", "0 secondary addresses"}},
		{name: "wireserver IPv6 only", conf: source("wireserver", "v6"), code: 11, say: []string{"no IPv4 subnet"}},
		{name: "wireserver bad address", conf: source("wireserver", "bad-address"), code: 11, say: []string{"10.0.0.999"}},
		{name: "wireserver HTTP 500", conf: source("wireserver", "500"), code: 11, say: []string{"HTTP 500"}},
		{name: "wireserver HTTP 404", conf: source("wireserver", "404"), code: 11, say: []string{"HTTP 404"}},
		{name: "wireserver slow", conf: source("wireserver", "slow"), code: 11, say: []string{"wireserver", "Timeout"}},
		{name: "wireserver truncated", conf: source("wireserver", "truncated"), code: 11, say: []string{"wireserver", "EOF"}},
		{name: "wireserver huge", conf: source("wireserver", "huge"), code: 11, say: []string{"larger than"}},
		{name: "wireserver redirect loop", conf: source("wireserver", "loop"), code: 11, say: []string{"redirects"}},
		{name: "wireserver refused", conf: func(m map[string]any) {
			ipamOf(m)["wireserverURL"] = fmt.Sprintf("http://%s:%d/", fabric.WireserverIP, badPort+1)
		}, code: 11, say: []string{"connection refused"}},
		{name: "IMDS malformed JSON", conf: source("imds", "bad-json"), code: 11, say: []string{"IMDS"}},
		{name: "IMDS other MAC", conf: source("imds", "other-mac"), code: 11, say: []string{"no interface with MAC"}},
		{name: "IMDS empty pool", conf: source("imds", "empty"), code: 11, say: []string{"no free address"}},
		{name: "IMDS HTTP 500", conf: source("imds", "500"), code: 11, say: []string{"HTTP 500"}},
		{name: "IMDS slow", conf: source("imds", "slow"), code: 11, say: []string{"IMDS", "Timeout"}},
		{name: "MAS file missing", conf: func(m map[string]any) {
			i := ipamOf(m)
			i["environment"], i["file"] = "file", filepath.Join(dir, "missing.json")
		}, code: 11, say: []string{"missing.json"}},
		{name: "MAS file malformed", conf: func(m map[string]any) {
			i := ipamOf(m)
			i["environment"], i["file"] = "file", masBad
		}, code: 11, say: []string{"interfaces.json", "not-a-mac"}},
	}
}

// badSources serves misbehaving wireservers and IMDS under paths named by
// the behaviour.
func badSources(n *node) http.Handler {
	own := n.spec
	nicWith := func(mac net.HardwareAddr, subnet netip.Prefix, addrs ...netip.Addr) nic.Interface {
		s := nic.Subnet{Prefix: subnet, Addresses: []nic.Address{{IP: own.PrimaryIP, IsPrimary: true}}}
		for _, a := range addrs {
			s.Addresses = append(s.Addresses, nic.Address{IP: a})
		}
		return nic.Interface{MAC: mac, IsPrimary: true, Subnets: []nic.Subnet{s}}
	}
	other := net.HardwareAddr{0x00, 0x0d, 0x3a, 0x99, 0x99, 0x99}
	xmlDoc := func(i nic.Interface) []byte { b, _ := wireserver.Marshal([]nic.Interface{i}); return b }
	jsonDoc := func(i nic.Interface) []byte {
		b, _ := json.Marshal(imds.Build([]nic.Interface{i}, func(netip.Addr) string { return "" }))
		return b
	}
	v6 := nic.Interface{MAC: net.HardwareAddr(own.MAC), IsPrimary: true, Subnets: []nic.Subnet{{
		Prefix: netip.MustParsePrefix("fd00::/64"), Addresses: []nic.Address{{IP: netip.MustParseAddr("fd00::4"), IsPrimary: true}, {IP: netip.MustParseAddr("fd00::5")}}}}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := strings.Trim(r.URL.Path, "/")
		kind, _, _ := strings.Cut(path, "/") // IMDS appends its path
		mine := net.HardwareAddr(own.MAC)
		doc := xmlDoc
		if strings.Contains(path, "metadata") {
			doc = jsonDoc
		}
		switch kind {
		case "bad-xml":
			fmt.Fprint(w, `<Interfaces><Interface MacAddress="`)
		case "bad-json":
			fmt.Fprint(w, `{"interface":[{"macAddress":`)
		case "other-mac":
			_, _ = w.Write(doc(nicWith(other, subnet, own.SecondaryIPs...)))
		case "empty":
			_, _ = w.Write(doc(nicWith(mine, subnet)))
		case "v6":
			_, _ = w.Write(xmlDoc(v6))
		case "bad-address":
			fmt.Fprintf(w, `<Interfaces><Interface MacAddress="%s" IsPrimary="true"><IPSubnet Prefix="%s"><IPAddress Address="%s" IsPrimary="true"/><IPAddress Address="10.0.0.999" IsPrimary="false"/></IPSubnet></Interface></Interfaces>`,
				nic.FormatAzureMAC(mine), subnet, own.PrimaryIP)
		case "500":
			http.Error(w, "internal error", http.StatusInternalServerError)
		case "404":
			http.NotFound(w, r)
		case "slow":
			time.Sleep(2 * time.Second)
			_, _ = w.Write(doc(nicWith(mine, subnet, own.SecondaryIPs...)))
		case "truncated":
			w.Header().Set("Content-Length", "4000")
			_, _ = w.Write(doc(nicWith(mine, subnet, own.SecondaryIPs...))[:100])
		case "huge":
			b := doc(nicWith(mine, subnet, own.SecondaryIPs...))
			_, _ = w.Write(b)
			_, _ = w.Write([]byte(strings.Repeat("<!-- padding -->", 5<<20/16)))
		case "loop":
			http.Redirect(w, r, r.URL.String(), http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	})
}

// idOf turns a case name into a valid container ID.
func idOf(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, name)
}
