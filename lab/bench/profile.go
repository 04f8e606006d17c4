package bench

import (
	"strconv"
	"strings"
)

// tracePhase is one "name=1.234ms" field of a trace line.
type tracePhase struct {
	name string
	ms   float64
}

// parseTrace finds the plugin's trace line for verb (AZURE_VNET_TRACE=1
// prints "azure-vnet trace ADD config=0.120ms ... total=3.400ms" to
// stderr) and returns its phases in order, total last. ok is false when
// stderr has no such line.
func parseTrace(stderr, verb string) (phases []tracePhase, ok bool) {
	for _, line := range strings.Split(stderr, "\n") {
		_, rest, found := strings.Cut(line, " trace "+verb+" ")
		if !found {
			continue
		}
		for _, f := range strings.Fields(rest) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			x, err := strconv.ParseFloat(strings.TrimSuffix(v, "ms"), 64)
			if err != nil {
				continue
			}
			phases = append(phases, tracePhase{k, x})
		}
		return phases, len(phases) > 0
	}
	return nil, false
}

// Synthetic phases around the plugin's own.
const (
	phaseProcess = "process" // exec, Go runtime start, exit: the plugin process less its traced total
	phaseLibcni  = "libcni"  // the libcni call less the plugin process
	phaseTotal   = "total"
)

// profileOf aggregates the trace phases of our plugin's calls. Phases
// repeated in one call (a phase name marked twice) are added up.
func profileOf(variantKey, verb, source, plugin string, os []outcome) Profile {
	p := Profile{Variant: variantKey, Command: verb, Source: source}
	var order []string
	samples := map[string][]float64{}
	for _, o := range os {
		if o.Err != nil {
			continue
		}
		var ex *Exec
		for i := range o.Execs {
			if o.Execs[i].Plugin == plugin {
				ex = &o.Execs[i]
			}
		}
		if ex == nil {
			continue
		}
		phases, ok := parseTrace(ex.Stderr, verb)
		if !ok {
			continue
		}
		p.N++
		per := map[string]float64{}
		total := 0.0
		for _, ph := range phases {
			if ph.name == phaseTotal {
				total = ph.ms
				continue
			}
			if _, seen := samples[ph.name]; !seen {
				order = append(order, ph.name)
				samples[ph.name] = nil
			}
			per[ph.name] += ph.ms
		}
		for name, v := range per {
			samples[name] = append(samples[name], v)
		}
		execWall := ms(ex.Wall)
		samples[phaseProcess] = append(samples[phaseProcess], max(0, execWall-total))
		samples[phaseLibcni] = append(samples[phaseLibcni], max(0, ms(o.Wall)-execWall))
		samples[phaseTotal] = append(samples[phaseTotal], ms(o.Wall))
	}
	for _, name := range append(order, phaseProcess, phaseLibcni, phaseTotal) {
		d := SummariseMS(samples[name])
		p.Phases = append(p.Phases, Phase{Name: name, P50: d.P50, Mean: d.Mean, P90: d.P90})
	}
	return p
}
