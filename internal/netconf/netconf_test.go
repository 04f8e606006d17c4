package netconf

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var equateNetip = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

// view is the part of a parsed NetConf the plugins act on: the canonical
// values after defaulting and validation.
type view struct {
	Name, Mode, Bridge, Master string
	SNAT                       bool
	NonMasquerade              []netip.Prefix
	Nameservers                []netip.Addr
	IPAMType, Environment      string
	WireserverURL, IMDSURL     string
	File                       string
	Refresh, Timeout           time.Duration
	StaticSubnet               netip.Prefix
	StaticPrimary              netip.Addr
	StaticAddrs                []netip.Addr
}

func viewOf(c *NetConf) view {
	return view{
		Name: c.Name, Mode: c.Mode, Bridge: c.Bridge, Master: c.Master,
		SNAT:          c.SNAT(),
		NonMasquerade: c.NonMasquerade,
		Nameservers:   c.Nameservers,
		IPAMType:      c.IPAM.Type, Environment: c.IPAM.Environment,
		WireserverURL: c.IPAM.WireserverURL, IMDSURL: c.IPAM.IMDSURL,
		File:    c.IPAM.File,
		Refresh: c.IPAM.Refresh, Timeout: c.IPAM.SourceTimeout,
		StaticSubnet: c.IPAM.StaticSubnet, StaticPrimary: c.IPAM.StaticPrimary, StaticAddrs: c.IPAM.StaticAddrs,
	}
}

// defaults is what azure-vnet makes of {"name":"azure","ipam":{"type":"azure-vnet-ipam"}}.
func defaults() view {
	return view{
		Name: "azure", Mode: ModeBridge, SNAT: true,
		NonMasquerade: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("172.16.0.0/12"),
			netip.MustParsePrefix("192.168.0.0/16"),
		},
		Nameservers: []netip.Addr{netip.MustParseAddr("168.63.129.16")},
		IPAMType:    IPAMType, Environment: EnvAzure,
		Refresh: 60 * time.Second, Timeout: 5 * time.Second,
	}
}

// ipamDefaults is what azure-vnet-ipam makes of the same: only the ipam
// section is defaulted.
func ipamDefaults() view {
	return view{
		Name: "azure", SNAT: true,
		IPAMType: IPAMType, Environment: EnvAzure,
		Refresh: 60 * time.Second, Timeout: 5 * time.Second,
	}
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// jsonList writes n generated strings as a JSON list.
func jsonList(n int, gen func(i int) string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q", gen(i))
	}
	b.WriteByte(']')
	return b.String()
}

// readInput returns a case's input: "@name" reads testdata/name.
func readInput(t *testing.T, in string) []byte {
	t.Helper()
	name, ok := strings.CutPrefix(in, "@")
	if !ok {
		return []byte(in)
	}
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type parseCase struct {
	name      string
	in        string      // the config on stdin; "@file" reads testdata/file
	ipamOnly  bool        // ParseIPAM (azure-vnet-ipam) instead of Parse (azure-vnet)
	want      func(*view) // edits the defaults into what is wanted; nil: the defaults
	wantField string      // non-empty: a *FieldError naming this field is wanted
	wantValue string      // and, when non-empty, naming this value
}

// The bulk of the cases: accepted configs first, then one rejection per
// field and problem.
var parseCases = []parseCase{
	// Accepted.
	{name: "seed conflist entry", in: "@seed-entry.json", want: func(v *view) { v.Bridge = "azure0" }},
	{name: "minimal", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam"}}`},
	{name: "transparent mode, IMDS, own DNS, SNAT off", in: "@transparent.json", want: func(v *view) {
		v.Mode, v.Master, v.SNAT = ModeTransparent, "eth0", false
		v.Nameservers = addrs("10.0.0.10", "168.63.129.16")
		v.Environment, v.IMDSURL = EnvIMDS, "http://169.254.169.254"
		v.Refresh, v.Timeout = 5*time.Minute, 2*time.Second
	}},
	{name: "environment azure with wireserver URL", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"azure","wireserverURL":"http://168.63.129.16/machine/plugins?comp=nmagent&type=getinterfaceinfov1"}}`, want: func(v *view) {
		v.WireserverURL = "http://168.63.129.16/machine/plugins?comp=nmagent&type=getinterfaceinfov1"
	}},
	{name: "environment imds over https", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"imds","imdsURL":"https://imds.example:8443/"}}`, want: func(v *view) {
		v.Environment, v.IMDSURL = EnvIMDS, "https://imds.example:8443/"
	}},
	{name: "environment file, default path", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"file"}}`, want: func(v *view) {
		v.Environment, v.File = EnvFile, DefaultMASFile
	}},
	{name: "environment mas, own path", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"mas","file":"/etc/cni/nics.json"}}`, want: func(v *view) {
		v.Environment, v.File = EnvMAS, "/etc/cni/nics.json"
	}},
	{name: "environment static", in: "@static.json", want: func(v *view) {
		v.Name, v.Bridge, v.Master = "lab", "azure0", "eth0"
		v.NonMasquerade = prefixes("10.0.0.0/16", "192.168.7.0/24")
		v.Environment = EnvStatic
		v.StaticSubnet, v.StaticPrimary = netip.MustParsePrefix("10.0.0.0/24"), netip.MustParseAddr("10.0.0.4")
		v.StaticAddrs = addrs("10.0.0.5", "10.0.0.6", "10.0.0.7")
	}},
	{name: "static without primary, subnet /30, unmasked", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.9/30","addresses":["10.0.0.10"]}}`, want: func(v *view) {
		v.Environment, v.StaticSubnet, v.StaticAddrs = EnvStatic, netip.MustParsePrefix("10.0.0.8/30"), addrs("10.0.0.10")
	}},
	{name: "static with 4096 addresses", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/16","addresses":` +
		jsonList(4096, func(i int) string { return fmt.Sprintf("10.0.%d.%d", 16+i/256, i%256) }) + `}}`, want: func(v *view) {
		v.Environment, v.StaticSubnet = EnvStatic, netip.MustParsePrefix("10.0.0.0/16")
		for i := 0; i < 4096; i++ {
			v.StaticAddrs = append(v.StaticAddrs, netip.AddrFrom4([4]byte{10, 0, byte(16 + i/256), byte(i % 256)}))
		}
	}},
	{name: "SNAT on explicitly", in: `{"name":"azure","enableSnat":true,"ipam":{"type":"azure-vnet-ipam"}}`},
	{name: "SNAT off", in: `{"name":"azure","enableSnat":false,"ipam":{"type":"azure-vnet-ipam"}}`, want: func(v *view) { v.SNAT = false }},
	{name: "nonMasqueradeCIDRs null keeps the defaults", in: `{"name":"azure","nonMasqueradeCIDRs":null,"ipam":{"type":"azure-vnet-ipam"}}`},
	{name: "nonMasqueradeCIDRs empty list replaces the defaults", in: `{"name":"azure","nonMasqueradeCIDRs":[],"ipam":{"type":"azure-vnet-ipam"}}`, want: func(v *view) { v.NonMasquerade = nil }},
	{name: "nonMasqueradeCIDRs padded", in: `{"name":"azure","nonMasqueradeCIDRs":[" 100.64.0.0/10 "],"ipam":{"type":"azure-vnet-ipam"}}`, want: func(v *view) { v.NonMasquerade = prefixes("100.64.0.0/10") }},
	{name: "1024 nonMasqueradeCIDRs", in: `{"name":"azure","nonMasqueradeCIDRs":` + jsonList(1024, func(i int) string { return fmt.Sprintf("10.%d.%d.0/24", i/256, i%256) }) + `,"ipam":{"type":"azure-vnet-ipam"}}`, want: func(v *view) {
		v.NonMasquerade = nil
		for i := 0; i < 1024; i++ {
			v.NonMasquerade = append(v.NonMasquerade, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 256), byte(i % 256), 0}), 24))
		}
	}},
	{name: "IPv6 nameserver", in: `{"name":"azure","dns":{"nameservers":["fd00::10"]},"ipam":{"type":"azure-vnet-ipam"}}`, want: func(v *view) { v.Nameservers = addrs("fd00::10") }},
	{name: "durations at their bounds", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","refreshInterval":"24h","timeout":"2m"}}`, want: func(v *view) { v.Refresh, v.Timeout = 24*time.Hour, 2*time.Minute }},
	{name: "unknown fields ignored", in: "@unknown-fields.json"},
	{name: "runtimeConfig and valid-attachments accepted", in: "@gc.json", want: func(v *view) { v.Environment, v.File = EnvMAS, "/var/lib/azure/interfaces.json" }},
	{name: "bridge name of 15 characters", in: `{"name":"azure","bridge":"azure0123456789","ipam":{"type":"azure-vnet-ipam"}}`, want: func(v *view) { v.Bridge = "azure0123456789" }},
	{name: "cniVersion is not checked here", in: `{"cniVersion":"9.9.9","name":"azure","ipam":{"type":"azure-vnet-ipam"}}`},

	// The IPAM plugin reads only name and ipam.
	{name: "ipam: seed entry", in: "@seed-entry.json", ipamOnly: true, want: func(v *view) { v.Mode, v.Bridge = ModeBridge, "azure0" }},
	{name: "ipam: ipam-only config", in: "@ipam-only.json", ipamOnly: true, want: func(v *view) {
		v.Environment, v.File, v.Refresh, v.Timeout = EnvFile, DefaultMASFile, time.Second, 100*time.Millisecond
	}},
	{name: "ipam: a mode azure-vnet rejects is not its business", in: `{"name":"azure","mode":"overlay","bridge":"a/b","ipam":{"type":"azure-vnet-ipam"}}`, ipamOnly: true, want: func(v *view) { v.Mode, v.Bridge = "overlay", "a/b" }},
	{name: "ipam: static", in: "@static.json", ipamOnly: true, want: func(v *view) {
		v.Name, v.Bridge, v.Master, v.Environment = "lab", "azure0", "eth0", EnvStatic
		v.StaticSubnet, v.StaticPrimary = netip.MustParsePrefix("10.0.0.0/24"), netip.MustParseAddr("10.0.0.4")
		v.StaticAddrs = addrs("10.0.0.5", "10.0.0.6", "10.0.0.7")
	}},

	// Rejected: missing or unacceptable values.
	{name: "no name", in: `{"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "name"},
	{name: "unknown mode", in: `{"name":"azure","mode":"l2bridge","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "mode", wantValue: "l2bridge"},
	{name: "mode in upper case", in: `{"name":"azure","mode":"Bridge","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "mode", wantValue: "Bridge"},
	{name: "missing ipam", in: `{"name":"azure","type":"azure-vnet"}`, wantField: "ipam.type"},
	{name: "ipam without type", in: `{"name":"azure","ipam":{"environment":"azure"}}`, wantField: "ipam.type"},
	{name: "ipam: ipam without type", in: `{"name":"azure","ipam":{}}`, ipamOnly: true, wantField: "ipam.type"},
	{name: "ipam type host-local", in: `{"name":"azure","ipam":{"type":"host-local"}}`, wantField: "ipam.type", wantValue: "host-local"},
	{name: "bridge name too long", in: `{"name":"azure","bridge":"azure01234567890","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "bridge", wantValue: "azure01234567890"},
	{name: "bridge name with slash", in: `{"name":"azure","bridge":"az/0","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "bridge", wantValue: "az/0"},
	{name: "bridge name with space", in: `{"name":"azure","bridge":"az 0","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "bridge"},
	{name: "bridge name dot-dot", in: `{"name":"azure","bridge":"..","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "bridge"},
	{name: "bridge name not ASCII", in: `{"name":"azure","bridge":"brücke","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "bridge"},
	{name: "master name too long", in: `{"name":"azure","master":"enP12345s1234567","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "master"},
	{name: "master name with slash", in: `{"name":"azure","master":"../eth0","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "master", wantValue: "../eth0"},
	{name: "master name with colon", in: `{"name":"azure","master":"eth0:1","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "master"},
	{name: "bridge equals master", in: `{"name":"azure","bridge":"eth0","master":"eth0","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "bridge", wantValue: "eth0"},
	{name: "bad non-masquerade CIDR", in: `{"name":"azure","nonMasqueradeCIDRs":["10.0.0.0/8","10.0.0.0/33"],"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "nonMasqueradeCIDRs[1]", wantValue: "10.0.0.0/33"},
	{name: "non-masquerade address without length", in: `{"name":"azure","nonMasqueradeCIDRs":["10.0.0.1"],"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "nonMasqueradeCIDRs[0]"},
	{name: "IPv6 non-masquerade CIDR", in: `{"name":"azure","nonMasqueradeCIDRs":["fd00::/8"],"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "nonMasqueradeCIDRs[0]", wantValue: "fd00::/8"},
	{name: "1025 nonMasqueradeCIDRs", in: `{"name":"azure","nonMasqueradeCIDRs":` + jsonList(1025, func(i int) string { return "10.0.0.0/8" }) + `,"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "nonMasqueradeCIDRs"},
	{name: "bad nameserver", in: `{"name":"azure","dns":{"nameservers":["168.63.129.16","dns.example"]},"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "dns.nameservers[1]", wantValue: "dns.example"},
	{name: "17 nameservers", in: `{"name":"azure","dns":{"nameservers":` + jsonList(17, func(i int) string { return fmt.Sprintf("10.0.0.%d", i+1) }) + `},"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "dns.nameservers"},
	{name: "unknown environment", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"aws"}}`, wantField: "ipam.environment", wantValue: "aws"},
	{name: "ipam: unknown environment", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"Azure"}}`, ipamOnly: true, wantField: "ipam.environment", wantValue: "Azure"},
	{name: "wireserver URL not http", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","wireserverURL":"ftp://168.63.129.16/"}}`, wantField: "ipam.wireserverURL", wantValue: "ftp://168.63.129.16/"},
	{name: "wireserver URL without host", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","wireserverURL":"http:///machine/plugins"}}`, wantField: "ipam.wireserverURL"},
	{name: "wireserver URL relative", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","wireserverURL":"168.63.129.16"}}`, wantField: "ipam.wireserverURL"},
	{name: "IMDS URL unparsable", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","imdsURL":"http://[::1"}}`, wantField: "ipam.imdsURL", wantValue: "http://[::1"},
	{name: "refresh interval not a duration", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","refreshInterval":"60"}}`, wantField: "ipam.refreshInterval", wantValue: "60"},
	{name: "refresh interval too short", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","refreshInterval":"999ms"}}`, wantField: "ipam.refreshInterval", wantValue: "999ms"},
	{name: "refresh interval negative", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","refreshInterval":"-1m"}}`, wantField: "ipam.refreshInterval"},
	{name: "refresh interval too long", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","refreshInterval":"24h0m1s"}}`, wantField: "ipam.refreshInterval"},
	{name: "refresh interval overflowing", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","refreshInterval":"9999999999h"}}`, wantField: "ipam.refreshInterval"},
	{name: "timeout too short", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","timeout":"99ms"}}`, wantField: "ipam.timeout", wantValue: "99ms"},
	{name: "timeout too long", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","timeout":"121s"}}`, wantField: "ipam.timeout"},
	{name: "static without subnet", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","addresses":["10.0.0.5"]}}`, wantField: "ipam.subnet"},
	{name: "static subnet not a CIDR", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0","addresses":["10.0.0.5"]}}`, wantField: "ipam.subnet", wantValue: "10.0.0.0"},
	{name: "static subnet IPv6", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"fd00::/64","addresses":["fd00::5"]}}`, wantField: "ipam.subnet"},
	{name: "static subnet /31", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/31","addresses":["10.0.0.1"]}}`, wantField: "ipam.subnet", wantValue: "10.0.0.0/31"},
	{name: "static primary outside subnet", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24","primaryIP":"10.0.1.4","addresses":["10.0.0.5"]}}`, wantField: "ipam.primaryIP", wantValue: "10.0.1.4"},
	{name: "static primary not an address", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24","primaryIP":"node","addresses":["10.0.0.5"]}}`, wantField: "ipam.primaryIP"},
	{name: "static without addresses", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24"}}`, wantField: "ipam.addresses"},
	{name: "static with empty address list", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24","addresses":[]}}`, wantField: "ipam.addresses"},
	{name: "static with 4097 addresses", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/16","addresses":` +
		jsonList(4097, func(i int) string { return fmt.Sprintf("10.0.%d.%d", 16+i/256, i%256) }) + `}}`, wantField: "ipam.addresses"},
	{name: "static address outside subnet", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24","addresses":["10.0.0.5","10.0.1.5"]}}`, wantField: "ipam.addresses[1]", wantValue: "10.0.1.5"},
	{name: "static address twice", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24","addresses":["10.0.0.5","10.0.0.6","10.0.0.5"]}}`, wantField: "ipam.addresses[2]", wantValue: "10.0.0.5"},
	{name: "static address is the gateway", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24","addresses":["10.0.0.1"]}}`, wantField: "ipam.addresses[0]", wantValue: "10.0.0.1"},
	{name: "static address is the network address", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24","addresses":["10.0.0.5","10.0.0.0"]}}`, wantField: "ipam.addresses[1]", wantValue: "10.0.0.0"},
	{name: "static address is the primary", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24","primaryIP":"10.0.0.4","addresses":["10.0.0.4"]}}`, wantField: "ipam.addresses[0]", wantValue: "10.0.0.4"},
	{name: "static address IPv6", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24","addresses":["::ffff:10.0.0.5"]}}`, wantField: "ipam.addresses[0]"},
	{name: "static address not an address", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24","addresses":["10.0.0.5/24"]}}`, wantField: "ipam.addresses[0]", wantValue: "10.0.0.5/24"},
	{name: "ipam: static address outside subnet", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24","addresses":["192.168.0.5"]}}`, ipamOnly: true, wantField: "ipam.addresses[0]"},

	// Rejected: a JSON value of the wrong type names its field.
	{name: "name a number", in: `{"name":5,"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "name"},
	{name: "cniVersion a number", in: `{"cniVersion":1.0,"name":"azure","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "cniVersion"},
	{name: "type a list", in: `{"name":"azure","type":["azure-vnet"],"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "type"},
	{name: "mode a number", in: `{"name":"azure","mode":1,"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "mode"},
	{name: "bridge a bool", in: `{"name":"azure","bridge":true,"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "bridge"},
	{name: "master an object", in: `{"name":"azure","master":{},"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "master"},
	{name: "enableSnat a string", in: `{"name":"azure","enableSnat":"true","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "enableSnat"},
	{name: "enableSnat a number", in: `{"name":"azure","enableSnat":1,"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "enableSnat"},
	{name: "nonMasqueradeCIDRs a string", in: `{"name":"azure","nonMasqueradeCIDRs":"10.0.0.0/8","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "nonMasqueradeCIDRs"},
	{name: "nonMasqueradeCIDRs of numbers", in: `{"name":"azure","nonMasqueradeCIDRs":[10],"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "nonMasqueradeCIDRs"},
	{name: "dns a string", in: `{"name":"azure","dns":"168.63.129.16","ipam":{"type":"azure-vnet-ipam"}}`, wantField: "dns"},
	{name: "dns.nameservers a string", in: `{"name":"azure","dns":{"nameservers":"168.63.129.16"},"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "dns.nameservers"},
	{name: "capabilities of strings", in: `{"name":"azure","capabilities":{"portMappings":"yes"},"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "capabilities"},
	{name: "prevResult a list", in: `{"name":"azure","prevResult":[],"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "prevResult"},
	{name: "valid-attachments an object", in: `{"name":"azure","cni.dev/valid-attachments":{},"ipam":{"type":"azure-vnet-ipam"}}`, wantField: "cni.dev/valid-attachments"},
	{name: "ipam a string", in: `{"name":"azure","ipam":"azure-vnet-ipam"}`, wantField: "ipam"},
	{name: "ipam.type a number", in: `{"name":"azure","ipam":{"type":7}}`, wantField: "ipam.type"},
	{name: "ipam.environment a bool", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":false}}`, wantField: "ipam.environment"},
	{name: "ipam.addresses a string", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","environment":"static","subnet":"10.0.0.0/24","addresses":"10.0.0.5"}}`, wantField: "ipam.addresses"},
	{name: "ipam.addresses of numbers", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","addresses":[167772165]}}`, wantField: "ipam.addresses"},
	{name: "ipam.refreshInterval a number", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","refreshInterval":60}}`, wantField: "ipam.refreshInterval"},
	{name: "ipam.timeout a number", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","timeout":5}}`, wantField: "ipam.timeout"},
	{name: "ipam: ipam.file a list", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam","file":["/x"]}}`, ipamOnly: true, wantField: "ipam.file"},
	{name: "ipam: name a bool", in: `{"name":true,"ipam":{"type":"azure-vnet-ipam"}}`, ipamOnly: true, wantField: "name"},

	// Rejected: not a JSON object at all.
	{name: "empty input", in: ``, wantField: "(document)"},
	{name: "not JSON", in: `name: azure`, wantField: "(document)"},
	{name: "truncated", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam"`, wantField: "(document)"},
	{name: "trailing garbage", in: `{"name":"azure","ipam":{"type":"azure-vnet-ipam"}} {}`, wantField: "(document)"},
	{name: "a list", in: `[{"name":"azure"}]`, wantField: "(top level)"},
	{name: "a string", in: `"azure"`, wantField: "(top level)"},
	{name: "null", in: `null`, wantField: "name"},
}

func TestParse(t *testing.T) {
	for _, tt := range parseCases {
		t.Run(tt.name, func(t *testing.T) {
			in := readInput(t, tt.in)
			parse, fn, want := Parse, "Parse", defaults()
			if tt.ipamOnly {
				parse, fn, want = ParseIPAM, "ParseIPAM", ipamDefaults()
			}
			short := string(in)
			if len(short) > 200 {
				short = short[:200] + "…"
			}
			got, err := parse(in)
			if tt.wantField != "" {
				var fe *FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("%s(%s) = %+v, %v; want a *FieldError for %s", fn, short, got, err, tt.wantField)
				}
				if fe.Field != tt.wantField || (tt.wantValue != "" && fe.Value != tt.wantValue) {
					t.Errorf("%s(%s): FieldError %+v, want field %q value %q", fn, short, fe, tt.wantField, tt.wantValue)
				}
				if !strings.Contains(err.Error(), tt.wantField) {
					t.Errorf("%s(%s): error %q does not name the field %q", fn, short, err, tt.wantField)
				}
				if !IsFieldError(err) {
					t.Errorf("%s(%s): IsFieldError(%v) = false", fn, short, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s(%s): %v", fn, short, err)
			}
			if tt.want != nil {
				tt.want(&want)
			}
			if d := cmp.Diff(want, viewOf(got), equateNetip); d != "" {
				t.Errorf("%s(%s) (-want +got):\n%s", fn, short, d)
			}
		})
	}
}

// TestParseDetails checks what the table's view leaves out.
func TestParseDetails(t *testing.T) {
	t.Run("default nameserver is written back for the result", func(t *testing.T) {
		c, err := Parse([]byte(`{"name":"azure","ipam":{"type":"azure-vnet-ipam"}}`))
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff([]string{"168.63.129.16"}, c.DNS.Nameservers); d != "" {
			t.Errorf("DNS.Nameservers (-want +got):\n%s", d)
		}
	})
	t.Run("defaults are copies", func(t *testing.T) {
		c, err := Parse([]byte(`{"name":"azure","ipam":{"type":"azure-vnet-ipam"}}`))
		if err != nil {
			t.Fatal(err)
		}
		c.NonMasquerade[0] = netip.MustParsePrefix("1.0.0.0/8")
		if DefaultNonMasquerade[0] != netip.MustParsePrefix("10.0.0.0/8") {
			t.Errorf("changing a parsed config changed DefaultNonMasquerade: %v", DefaultNonMasquerade)
		}
	})
	t.Run("valid attachments", func(t *testing.T) {
		c, err := Parse(readInput(t, "@gc.json"))
		if err != nil {
			t.Fatal(err)
		}
		if c.ValidAttachments == nil || len(*c.ValidAttachments) != 2 || (*c.ValidAttachments)[1].IfName != "eth1" {
			t.Errorf("ValidAttachments = %+v, want the two listed in testdata/gc.json", c.ValidAttachments)
		}
		if len(c.RuntimeConfig) == 0 {
			t.Errorf("RuntimeConfig is empty, want the portMappings from testdata/gc.json")
		}
	})
	t.Run("error message names field, value and problem", func(t *testing.T) {
		_, err := Parse([]byte(`{"name":"azure","mode":"l2bridge","ipam":{"type":"azure-vnet-ipam"}}`))
		want := `invalid network config: mode: "l2bridge": must be "bridge" or "transparent"`
		if err == nil || err.Error() != want {
			t.Errorf("Parse(mode l2bridge) error = %v, want %s", err, want)
		}
		_, err = Parse([]byte(`{"ipam":{"type":"azure-vnet-ipam"}}`))
		want = `invalid network config: name: required`
		if err == nil || err.Error() != want {
			t.Errorf("Parse(no name) error = %v, want %s", err, want)
		}
	})
}

// TestSeedConflist runs the seed's conflist through libcni the way a runtime
// does and parses the azure-vnet entry as the plugin receives it.
func TestSeedConflist(t *testing.T) {
	list, err := libcni.ConfListFromBytes(readInput(t, "@seed.conflist"))
	if err != nil {
		t.Fatalf("libcni.ConfListFromBytes(testdata/seed.conflist): %v", err)
	}
	if len(list.Plugins) != 2 || list.Plugins[0].Network.Type != "azure-vnet" {
		t.Fatalf("testdata/seed.conflist: plugins %+v, want azure-vnet then portmap", list.Plugins)
	}
	pc, err := libcni.InjectConf(list.Plugins[0], map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		fn    string
		parse func([]byte) (*NetConf, error)
		want  view
	}{
		{"Parse", Parse, defaults()},
		{"ParseIPAM", ParseIPAM, ipamDefaults()},
	} {
		c, err := p.parse(pc.Bytes)
		if err != nil {
			t.Fatalf("%s(%s): %v", p.fn, pc.Bytes, err)
		}
		p.want.Mode, p.want.Bridge = ModeBridge, "azure0"
		if d := cmp.Diff(p.want, viewOf(c), equateNetip); d != "" {
			t.Errorf("%s(%s) (-want +got):\n%s", p.fn, pc.Bytes, d)
		}
		if c.CNIVersion != "0.3.0" || c.Type != "azure-vnet" {
			t.Errorf("%s(%s): cniVersion %q type %q, want 0.3.0 azure-vnet", p.fn, pc.Bytes, c.CNIVersion, c.Type)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, tt := range parseCases {
		if !strings.HasPrefix(tt.in, "@") && len(tt.in) < 1000 {
			f.Add([]byte(tt.in))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, p := range []struct {
			fn    string
			parse func([]byte) (*NetConf, error)
		}{{"Parse", Parse}, {"ParseIPAM", ParseIPAM}} {
			c, err := p.parse(b)
			if err != nil {
				var fe *FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("%s(%q) error %v (%T) is not a *FieldError", p.fn, b, err, err)
				}
				if fe.Field == "" || fe.Problem == "" {
					t.Fatalf("%s(%q): FieldError %+v lacks a field or a problem", p.fn, b, fe)
				}
				continue
			}
			checkCanonical(t, p.fn, b, c)
		}
	})
}

// checkCanonical checks the invariants of an accepted config.
func checkCanonical(t *testing.T, fn string, in []byte, c *NetConf) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s(%q): "+format, append([]any{fn, in}, args...)...)
	}
	i := c.IPAM
	switch i.Environment {
	case EnvAzure, EnvIMDS, EnvFile, EnvMAS, EnvStatic:
	default:
		fail("environment %q", i.Environment)
	}
	if i.Type == "" {
		fail("accepted without ipam.type")
	}
	if i.Refresh < time.Second || i.Refresh > 24*time.Hour || i.SourceTimeout < 100*time.Millisecond || i.SourceTimeout > 2*time.Minute {
		fail("refresh %v timeout %v out of range", i.Refresh, i.SourceTimeout)
	}
	if (i.Environment == EnvFile || i.Environment == EnvMAS) && i.File == "" {
		fail("no file for environment %s", i.Environment)
	}
	if i.Environment == EnvStatic {
		if !i.StaticSubnet.IsValid() || !i.StaticSubnet.Addr().Is4() || i.StaticSubnet.Bits() > 30 || len(i.StaticAddrs) == 0 {
			fail("static subnet %v with %d addresses", i.StaticSubnet, len(i.StaticAddrs))
		}
		seen := map[netip.Addr]bool{}
		for _, a := range i.StaticAddrs {
			if !i.StaticSubnet.Contains(a) || a == i.StaticSubnet.Addr() || a == i.StaticSubnet.Addr().Next() || a == i.StaticPrimary || seen[a] {
				fail("static address %v not usable in %v (primary %v)", a, i.StaticSubnet, i.StaticPrimary)
			}
			seen[a] = true
		}
	}
	if fn != "Parse" {
		return
	}
	if c.Name == "" || c.IPAM.Type != IPAMType || (c.Mode != ModeBridge && c.Mode != ModeTransparent) {
		fail("name %q ipam.type %q mode %q", c.Name, c.IPAM.Type, c.Mode)
	}
	if len(c.Nameservers) == 0 || len(c.Nameservers) != len(c.DNS.Nameservers) || len(c.Nameservers) > 16 {
		fail("nameservers %v / %v", c.Nameservers, c.DNS.Nameservers)
	}
	if len(c.NonMasquerade) > 1024 {
		fail("%d non-masquerade prefixes", len(c.NonMasquerade))
	}
	for _, p := range c.NonMasquerade {
		if !p.Addr().Is4() || p != p.Masked() {
			fail("non-masquerade prefix %v not canonical IPv4", p)
		}
	}
	for _, n := range []string{c.Bridge, c.Master} {
		if len(n) > 15 || strings.ContainsAny(n, "/: ") {
			fail("interface name %q", n)
		}
	}
}
