package bench

import (
	"fmt"
	"math"
	"strings"
)

// table is a Markdown table under construction.
type table struct {
	head []string
	rows [][]string
}

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) String() string {
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	line(t.head)
	sep := make([]string, len(t.head))
	for i := range sep {
		sep[i] = "---"
		if i > 0 {
			sep[i] = "---:"
		}
	}
	line(sep)
	for _, r := range t.rows {
		line(r)
	}
	return b.String()
}

func f(x float64, prec int) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return noValue
	}
	return fmt.Sprintf("%.*f", prec, x)
}

// variantHead heads the setup and burst tables: ours, the reference, and
// ours against the reference.
func variantHead() []string {
	h := []string{""}
	for _, v := range ours {
		h = append(h, VariantTitle(v))
	}
	h = append(h, VariantTitle(VariantReference))
	for _, v := range ours {
		h = append(h, shortTitle(v)+" / ref")
	}
	return h
}

func shortTitle(v string) string {
	if v == VariantAgent {
		return "vnetd"
	}
	return v
}

// variantCells are the values of ours, the reference's, and the ratios.
func variantCells(get func(v string) float64, prec int) []string {
	ref := get(VariantReference)
	var vals, ratios []string
	for _, v := range ours {
		x := get(v)
		vals = append(vals, f(x, prec))
		ratios = append(ratios, fmtRatio(Ratio(x, ref)))
	}
	return append(append(vals, f(ref, prec)), ratios...)
}

// SetupTable is the one-pod-at-a-time table.
func SetupTable(r *Results) string {
	t := &table{head: variantHead()}
	add := func(name string, get func(*Setup) float64, prec int) {
		t.row(append([]string{name}, variantCells(func(v string) float64 { return get(r.setup(v)) }, prec)...)...)
	}
	add("ADD p50, ms", func(s *Setup) float64 { return s.AddMS.P50 }, 2)
	add("ADD p90, ms", func(s *Setup) float64 { return s.AddMS.P90 }, 2)
	add("ADD p99, ms", func(s *Setup) float64 { return s.AddMS.P99 }, 2)
	add("DEL p50, ms", func(s *Setup) float64 { return s.DelMS.P50 }, 2)
	add("DEL p90, ms", func(s *Setup) float64 { return s.DelMS.P90 }, 2)
	add("DEL p99, ms", func(s *Setup) float64 { return s.DelMS.P99 }, 2)
	add("first ADD (sets up the network), ms", func(s *Setup) float64 { return s.FirstAddMS }, 2)
	fp := func(s *Setup) *Footprint { return r.footprint(s.Variant) }
	add("ADD peak RSS p50, MB", func(s *Setup) float64 { return fp(s).AddRSSMB.P50 }, 1)
	add("ADD peak RSS max, MB", func(s *Setup) float64 { return fp(s).AddRSSMB.Max }, 1)
	add("DEL peak RSS p50, MB", func(s *Setup) float64 { return fp(s).DelRSSMB.P50 }, 1)
	add("DEL peak RSS max, MB", func(s *Setup) float64 { return fp(s).DelRSSMB.Max }, 1)
	add("ADD CPU time p50, ms", func(s *Setup) float64 { return s.AddCPUMS.P50 }, 2)
	add("DEL CPU time p50, ms", func(s *Setup) float64 { return s.DelCPUMS.P50 }, 2)
	add("ADD page faults p50", func(s *Setup) float64 { return s.AddFaults.P50 }, 0)
	add("DEL page faults p50", func(s *Setup) float64 { return s.DelFaults.P50 }, 0)
	add("failures", func(s *Setup) float64 { return float64(s.Failures) }, 0)
	add("duplicate addresses", func(s *Setup) float64 { return float64(s.Duplicates) }, 0)
	return t.String()
}

// BurstTable is the concurrent ADD/DEL table.
func BurstTable(r *Results) string {
	t := &table{head: append([]string{"burst"}, variantHead()...)}
	for _, n := range r.Params.Bursts {
		add := func(name string, get func(*Burst) float64, prec int) {
			t.row(append([]string{fmt.Sprint(n), name}, variantCells(func(v string) float64 { return get(r.burst(v, n)) }, prec)...)...)
		}
		add("all ready (ADD), ms, median of rounds", func(b *Burst) float64 { return b.AddWallMS.P50 }, 0)
		add("all ready (ADD), ms, worst round", func(b *Burst) float64 { return b.AddWallMS.Max }, 0)
		add("all deleted (DEL), ms, median of rounds", func(b *Burst) float64 { return b.DelWallMS.P50 }, 0)
		add("ADD per call p50, ms", func(b *Burst) float64 { return b.AddMS.P50 }, 1)
		add("ADD per call p99, ms", func(b *Burst) float64 { return b.AddMS.P99 }, 1)
		add("DEL per call p50, ms", func(b *Burst) float64 { return b.DelMS.P50 }, 1)
		add("DEL per call p99, ms", func(b *Burst) float64 { return b.DelMS.P99 }, 1)
		row := []string{fmt.Sprint(n), "failures / duplicates"}
		for _, v := range append(append([]string(nil), ours...), VariantReference) {
			b := r.burst(v, n)
			row = append(row, fmt.Sprintf("%d / %d", b.Failures, b.Duplicates))
		}
		for range ours {
			row = append(row, "")
		}
		t.row(row...)
	}
	return t.String()
}

// pathTitle names a datapath measurement.
func pathTitle(p *Path) string {
	var mode string
	switch p.Mode {
	case ModeRaw:
		return "VM↔VM, no CNI on either VM (the fabric's limit)"
	default:
		mode = VariantTitle(p.Mode)
	}
	switch p.Kind {
	case KindVMVM:
		return mode + ": VM↔VM"
	case KindPodPodCross:
		return mode + ": pod↔pod across VMs"
	case KindPodPodLocal:
		return mode + ": pod↔pod on one VM"
	}
	return mode + ": " + p.Kind
}

// DatapathTable is the throughput and latency table; ratios are against
// the raw VM↔VM path of the same run.
func DatapathTable(r *Results) string {
	raw := r.path(ModeRaw, KindVMVM)
	t := &table{head: []string{"path", "TCP 1 stream, Gbit/s", "TCP 4 streams, Gbit/s", "RTT avg, µs", "RTT p99, µs",
		"1 stream / VM↔VM", "4 streams / VM↔VM", "RTT / VM↔VM"}}
	for _, p := range r.Datapath {
		t.row(pathTitle(p), f(med(p.Gbps1), 2), f(med(p.Gbps4), 2), f(med(p.RTTus), 1), f(med(p.RTT99), 1),
			fmtRatio(Ratio(med(p.Gbps1), med(raw.Gbps1))), fmtRatio(Ratio(med(p.Gbps4), med(raw.Gbps4))),
			fmtRatio(Ratio(med(p.RTTus), med(raw.RTTus))))
	}
	return t.String()
}

// TargetTable lists the targets and whether the run met them.
func TargetTable(r *Results) string {
	t := &table{head: []string{"target", "want", "got", "met"}}
	for _, x := range r.Targets {
		met := "**no**"
		switch {
		case x.Met:
			met = "yes"
		case strings.HasPrefix(x.Got, noValue):
			met = "not measured"
		}
		t.row(x.Name, x.Want, x.Got, met)
	}
	return t.String()
}

// ProfileTable shows the phases of our commands side by side, p50 in ms.
func ProfileTable(r *Results, verb string) string {
	var ps []Profile
	for _, p := range r.Profiles {
		if p.Command == verb {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return ""
	}
	head := []string{"phase (p50, ms)"}
	var names []string
	seen := map[string]bool{}
	for _, p := range ps {
		head = append(head, fmt.Sprintf("%s, %s (n=%d)", VariantTitle(p.Variant), p.Source, p.N))
		for _, ph := range p.Phases {
			if !seen[ph.Name] {
				seen[ph.Name] = true
				names = append(names, ph.Name)
			}
		}
	}
	t := &table{head: head}
	for _, name := range names {
		cells := []string{phaseTitle(verb, name)}
		for _, p := range ps {
			v := math.NaN()
			for _, ph := range p.Phases {
				if ph.Name == name {
					v = ph.P50
				}
			}
			cells = append(cells, f(v, 3))
		}
		t.row(cells...)
	}
	return t.String()
}

// phaseTitle explains a phase of the plugin's trace for a command.
func phaseTitle(verb, name string) string {
	if d, ok := phaseDoc[verb+" "+name]; ok {
		return fmt.Sprintf("%s (%s)", name, d)
	}
	if d, ok := phaseDoc[name]; ok {
		return fmt.Sprintf("%s (%s)", name, d)
	}
	return name
}

var phaseDoc = map[string]string{
	"config":     "parse stdin and CNI_ARGS",
	"ADD config": "parse stdin and CNI_ARGS, check the netns",
	"state":      "open netlink and nftables, lock the attachment, read the state file",
	"ADD state":  "open netlink and nftables, lock the attachment, read the state file, find the NIC",
	"pool":       "the cached address pool, or the wireserver",
	"network":    "is the node's network ready (bridge, static rules)",
	"ipam":       "one locked state update",
	"ADD ipam":   "allocate and record the endpoint: one locked state update",
	"DEL ipam":   "release the address, forget the endpoint: one locked state update",
	"kernel":     "what is left of the datapath call",
	"ADD veth":   "create the veth pair into the pod; alias and bridge port",
	"DEL veth":   "delete the host veth; its pod end goes with it",
	"pod":        "pod side: address, link up, routes",
	"link":       "host side: hairpin and FDB, or proxy ARP and the /32 route",
	"ADD nft":    "add the pod's nftables set and map elements",
	"DEL nft":    "remove the pod's nftables elements",
	phaseProcess: "exec, Go runtime start and exit: the process less its traced phases",
	phaseLibcni:  "libcni around the process: config injection, result cache",
	phaseTotal:   "the libcni call",
}

// Summary is the tables make bench prints.
func Summary(r *Results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Pod network setup, one pod at a time (%d pods per variant, libcni wall time):\n\n%s\n", r.Params.Pods, SetupTable(r))
	fmt.Fprintf(&b, "Bursts (N pods ADDed at once on one VM, then DELeted at once; %d rounds):\n\n%s\n", r.Params.BurstRounds, BurstTable(r))
	fmt.Fprintf(&b, "Datapath (median of %d rounds; ratios against VM↔VM without CNI):\n\n%s\n", r.Params.DatapathRounds, DatapathTable(r))
	fmt.Fprintf(&b, "Targets:\n\n%s", TargetTable(r))
	return b.String()
}
