package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// synthetic is a small run's results: ours at a third of the reference's
// setup time, a burst with a failure, pod traffic at 90% of the fabric.
func synthetic() *Results {
	r := &Results{Command: "make bench", Params: Params{Pods: 3, Bursts: []int{16, 250}, BurstRounds: 1, DatapathRounds: 1}}
	r.Machine.Cores = 2
	for _, v := range Variants {
		k := 1.0
		if v == VariantReference {
			k = 3
		}
		r.Setup = append(r.Setup, &Setup{Variant: v, AddMS: SummariseMS([]float64{10 * k, 11 * k, 12 * k}),
			DelMS: SummariseMS([]float64{20 * k, 21 * k, 22 * k}), AddSamplesMS: []float64{10 * k, 11 * k, 12 * k}})
		r.Footprint = append(r.Footprint, &Footprint{Variant: v, AddRSSMB: SummariseMS([]float64{9}), DelRSSMB: SummariseMS([]float64{9.5})})
		for _, n := range r.Params.Bursts {
			b := &Burst{Variant: v, Size: n, Rounds: []BurstRound{{AddWallMS: float64(n) * 10 * k}}, AddWallMS: SummariseMS([]float64{float64(n) * 10 * k})}
			if v == VariantTransparent && n == 250 {
				b.Failures = 1
			}
			r.Bursts = append(r.Bursts, b)
		}
	}
	r.Datapath = []*Path{
		{Mode: ModeRaw, Kind: KindVMVM, Gbps1: []float64{10}, Gbps4: []float64{10}, RTTus: []float64{50}},
		{Mode: VariantBridge, Kind: KindPodPodCross, Gbps1: []float64{9}, Gbps4: []float64{9.6}, RTTus: []float64{52}},
		{Mode: VariantTransparent, Kind: KindPodPodCross, Gbps1: []float64{9.7}, Gbps4: []float64{0}, RTTus: []float64{60}},
	}
	r.Profiles = []Profile{{Variant: VariantBridge, Command: "ADD", Source: "sequential", N: 3,
		Phases: []Phase{{Name: "config", P50: 0.1}, {Name: "veth", P50: 2}, {Name: phaseTotal, P50: 11}}}}
	r.Targets = Targets(r)
	return r
}

func TestTargets(t *testing.T) {
	met := map[string]bool{}
	for _, x := range synthetic().Targets {
		met[x.Name] = x.Met
	}
	for name, want := range map[string]bool{
		"ADD p50, azure-vnet bridge vs bridge + host-local":                            true,
		"250-pod burst on 2 cores, azure-vnet bridge":                                  true,  // 2.5 s, no failures
		"250-pod burst on 2 cores, azure-vnet transparent":                             false, // one failure
		"cross-VM pod↔pod TCP throughput, 1 stream, azure-vnet bridge, vs VM↔VM":       false,
		"cross-VM pod↔pod TCP throughput, 4 streams, azure-vnet bridge, vs VM↔VM":      true,
		"cross-VM pod↔pod TCP throughput, 4 streams, azure-vnet transparent, vs VM↔VM": false, // failed runs count as missing
		"cross-VM pod↔pod TCP round trip, azure-vnet bridge, overhead vs VM↔VM":        true,
		"cross-VM pod↔pod TCP round trip, azure-vnet transparent, overhead vs VM↔VM":   false,
		"peak RSS of one call, azure-vnet transparent":                                 true,
	} {
		got, ok := met[name]
		if !ok || got != want {
			t.Errorf("target %q: met %v (present %v), want %v", name, got, ok, want)
		}
	}
}

func TestDocumentKeepsAnalysis(t *testing.T) {
	r := synthetic()
	dir := t.TempDir()
	if err := Write(r, dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, ReportFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(string(b), "_No analysis yet._", "The ADD is bound by exec.", 1)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Started = time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)
	if err := Write(r, dir); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	for _, want := range []string{"The ADD is bound by exec.", "2030-01-02 03:04 UTC", "| ADD p50, ms | 11.00 | 11.00 | 11.00 | 33.00 | 0.33× | 0.33× | 0.33× |"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("rewritten report lacks %q", want)
		}
	}
	for _, f := range []string{ResultsFile, "bench/" + ChartSetup, "bench/" + ChartSetupCDF, "bench/" + ChartBursts, "bench/" + ChartDatapath, "bench/" + ChartProfile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v (size %d), want a non-empty file", f, err, st.Size())
		}
	}
}

func TestDocumentOfEmptyResults(t *testing.T) {
	r := &Results{}
	r.Targets = Targets(r)
	doc := Document(r, "")
	if !strings.Contains(doc, "_No analysis yet._") || strings.Contains(doc, "NaN") {
		t.Errorf("Document of empty results: want an empty analysis and no NaN, got:\n%s", doc)
	}
	if err := WriteCharts(r, t.TempDir()); err != nil {
		t.Errorf("WriteCharts of empty results: %v", err)
	}
}

func TestProfileOf(t *testing.T) {
	mk := func(wall, exec time.Duration, trace string) outcome {
		return outcome{call: call{Wall: wall, Execs: []Exec{{Plugin: "azure-vnet", Wall: exec, Stderr: trace}}}}
	}
	p := profileOf(VariantBridge, "ADD", "sequential", "azure-vnet", []outcome{
		mk(12*time.Millisecond, 11*time.Millisecond, "azure-vnet trace ADD config=1.000ms veth=3.000ms total=4.000ms\n"),
		mk(14*time.Millisecond, 13*time.Millisecond, "azure-vnet trace ADD config=1.000ms veth=5.000ms total=6.000ms\n"),
		{call: call{Err: os.ErrNotExist}},
	})
	got := map[string]float64{}
	for _, ph := range p.Phases {
		got[ph.Name] = ph.P50
	}
	want := map[string]float64{"config": 1, "veth": 4, phaseProcess: 7, phaseLibcni: 1, phaseTotal: 13}
	if p.N != 2 || len(got) != len(want) {
		t.Fatalf("profile of 2 traced calls: n=%d phases %v, want n=2 phases %v", p.N, got, want)
	}
	for k, v := range want {
		if d := got[k] - v; d > 1e-9 || d < -1e-9 {
			t.Errorf("phase %s p50 = %v, want %v", k, got[k], v)
		}
	}
}
