package bench

import (
	"fmt"
	"math"
	"slices"
)

// Target thresholds, from the issue.
const (
	targetSetupRatio  = 0.5   // our ADD/DEL p50 over the reference's
	targetBurstMS     = 5000  // all pods of the largest burst ready
	targetThroughput  = 0.95  // cross-VM pod↔pod over VM↔VM
	targetRTTOverhead = 0.05  // cross-VM pod↔pod RTT over VM↔VM, less one
	targetRSSMB       = 20.0  // peak RSS of one plugin call
	targetBurstSize   = 250   // the burst the target is about
	targetCores       = 2     // ... on this many cores
	noValue           = "n/a" // a value the run did not produce

	// The node agent's targets (issue 13).
	targetAgentAddRatio = 0.25 // ADD p50 through vnetd over the reference's
	targetAgentDelRatio = 0.5  // DEL p50 through vnetd over the reference's
	targetAgentBurstMS  = 3000 // all pods of the largest burst ready
	targetClientRSSMB   = 8.0  // peak RSS of one plugin call through vnetd
	targetAgentRSSMB    = 40.0 // vnetd's resident size with the burst's pods
)

// setupRatio is the ADD or DEL target of a variant.
func setupRatio(v, verb string) float64 {
	switch {
	case v != VariantAgent:
		return targetSetupRatio
	case verb == "ADD":
		return targetAgentAddRatio
	}
	return targetAgentDelRatio
}

// setup returns a variant's sequential results.
func (r *Results) setup(v string) *Setup {
	for _, s := range r.Setup {
		if s.Variant == v {
			return s
		}
	}
	return &Setup{Variant: v}
}

// footprint returns a variant's footprint.
func (r *Results) footprint(v string) *Footprint {
	for _, f := range r.Footprint {
		if f.Variant == v {
			return f
		}
	}
	return &Footprint{Variant: v}
}

// burst returns a variant's burst of size n.
func (r *Results) burst(v string, n int) *Burst {
	for _, b := range r.Bursts {
		if b.Variant == v && b.Size == n {
			return b
		}
	}
	return &Burst{Variant: v, Size: n}
}

// path returns a datapath measurement.
func (r *Results) path(mode, kind string) *Path {
	for _, p := range r.Datapath {
		if p.Mode == mode && p.Kind == kind {
			return p
		}
	}
	return &Path{Mode: mode, Kind: kind}
}

// largestBurst is the biggest burst the run made.
func (r *Results) largestBurst() int {
	if len(r.Params.Bursts) == 0 {
		return 0
	}
	return slices.Max(r.Params.Bursts)
}

// med is the median of the successful rounds (zero means failed).
func med(v []float64) float64 {
	var ok []float64
	for _, x := range v {
		if x > 0 {
			ok = append(ok, x)
		}
	}
	return Median(ok)
}

// Targets compares the run with the targets.
func Targets(r *Results) []Target {
	var out []Target
	ref := r.setup(VariantReference)
	for _, v := range ours {
		s := r.setup(v)
		for _, c := range []struct {
			verb      string
			ours, ref float64
		}{{"ADD", s.AddMS.P50, ref.AddMS.P50}, {"DEL", s.DelMS.P50, ref.DelMS.P50}} {
			ratio, want := Ratio(c.ours, c.ref), setupRatio(v, c.verb)
			out = append(out, Target{
				Name:  fmt.Sprintf("%s p50, %s vs %s", c.verb, VariantTitle(v), VariantTitle(VariantReference)),
				Want:  fmt.Sprintf("≤ %.2f×", want),
				Got:   fmt.Sprintf("%s (%s ms vs %s ms)", fmtRatio(ratio), f(c.ours, 2), f(c.ref, 2)),
				Value: ratio,
				Met:   ratio <= want,
			})
		}
	}
	n := r.largestBurst()
	for _, v := range ours {
		b := r.burst(v, n)
		worst := b.AddWallMS.Max
		limit := float64(targetBurstMS)
		if v == VariantAgent {
			limit = targetAgentBurstMS
		}
		name := fmt.Sprintf("%d-pod burst on %d cores, %s", n, r.Machine.Cores, VariantTitle(v))
		if n != targetBurstSize {
			name += fmt.Sprintf(" (the target is for %d pods)", targetBurstSize)
		}
		out = append(out, Target{
			Name:  name,
			Want:  fmt.Sprintf("0 failures, 0 duplicates, all ready ≤ %.0f s", limit/1000),
			Got:   fmt.Sprintf("%d failures, %d duplicates, all ready in %.2f s (worst of %d)", b.Failures, b.Duplicates, worst/1000, len(b.Rounds)),
			Value: worst,
			Met:   len(b.Rounds) > 0 && b.Failures == 0 && b.Duplicates == 0 && worst <= limit,
		})
	}
	raw := r.path(ModeRaw, KindVMVM)
	for _, v := range []string{VariantBridge, VariantTransparent} { // the agent's datapath is bridge mode's
		p := r.path(v, KindPodPodCross)
		for _, c := range []struct {
			what      string
			pod, base []float64
		}{{"1 stream", p.Gbps1, raw.Gbps1}, {"4 streams", p.Gbps4, raw.Gbps4}} {
			ratio := Ratio(med(c.pod), med(c.base))
			out = append(out, Target{
				Name:  fmt.Sprintf("cross-VM pod↔pod TCP throughput, %s, %s, vs VM↔VM", c.what, VariantTitle(v)),
				Want:  fmt.Sprintf("≥ %.2f×", targetThroughput),
				Got:   fmt.Sprintf("%s (%s vs %s Gbit/s)", fmtRatio(ratio), f(med(c.pod), 2), f(med(c.base), 2)),
				Value: ratio,
				Met:   ratio >= targetThroughput,
			})
		}
		over := Ratio(med(p.RTTus), med(raw.RTTus)) - 1
		out = append(out, Target{
			Name:  fmt.Sprintf("cross-VM pod↔pod TCP round trip, %s, overhead vs VM↔VM", VariantTitle(v)),
			Want:  fmt.Sprintf("≤ %.0f%%", targetRTTOverhead*100),
			Got:   fmt.Sprintf("%s (%s vs %s µs)", fmtPercent(over), f(med(p.RTTus), 1), f(med(raw.RTTus), 1)),
			Value: over,
			Met:   over <= targetRTTOverhead,
		})
	}
	for _, v := range ours {
		s := r.footprint(v)
		peak := math.Max(s.AddRSSMB.Max, s.DelRSSMB.Max)
		limit := targetRSSMB
		if v == VariantAgent {
			limit = targetClientRSSMB
		}
		out = append(out, Target{
			Name:  fmt.Sprintf("peak RSS of one call, %s", VariantTitle(v)),
			Want:  fmt.Sprintf("≤ %.0f MB", limit),
			Got:   fmt.Sprintf("%.1f MB (ADD p50 %.1f, DEL p50 %.1f)", peak, s.AddRSSMB.P50, s.DelRSSMB.P50),
			Value: peak,
			Met:   s.AddRSSMB.N > 0 && peak <= limit,
		})
	}
	out = append(out, Target{
		Name:  fmt.Sprintf("vnetd RSS after the %d-pod bursts", n),
		Want:  fmt.Sprintf("≤ %.0f MB", targetAgentRSSMB),
		Got:   fmt.Sprintf("%.1f MB (peak %.1f MB)", r.AgentRSSMB, r.AgentPeakRSSMB),
		Value: r.AgentPeakRSSMB,
		Met:   r.AgentPeakRSSMB > 0 && r.AgentPeakRSSMB <= targetAgentRSSMB,
	})
	for i := range out {
		// JSON has no NaN; Got says n/a and Met is false.
		if math.IsNaN(out[i].Value) || math.IsInf(out[i].Value, 0) {
			out[i].Value = 0
		}
	}
	return out
}

func fmtRatio(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return noValue
	}
	return fmt.Sprintf("%.2f×", x)
}

func fmtPercent(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return noValue
	}
	return fmt.Sprintf("%+.1f%%", x*100)
}
