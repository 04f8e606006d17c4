// Package bench measures vnetcni on the emulated VNet (lab/fabric):
// how fast pods get their network through libcni, one at a time and in
// bursts, against the reference plugins (bridge + host-local from
// containernetworking/plugins) on the same VM in the same run; what one
// plugin call costs the node (peak RSS, CPU time); where an ADD spends its
// time (the plugin's AZURE_VNET_TRACE phases); and how pod traffic compares
// with VM traffic over the same fabric (iperf3, sockperf).
//
// Everything runs in namespaces the run creates under a unique name and
// removes again, also when the run fails or is interrupted. Run writes the
// raw results as JSON, a Markdown report and PNG charts.
package bench

import (
	"time"
)

// Variants: the plugin configurations the setup benchmarks compare.
const (
	VariantBridge      = "bridge"      // azure-vnet, bridge mode
	VariantTransparent = "transparent" // azure-vnet, transparent mode
	VariantAgent       = "agent"       // azure-vnet, bridge mode, served by vnetd
	VariantReference   = "reference"   // bridge + host-local
)

// Variants in report order.
var Variants = []string{VariantBridge, VariantTransparent, VariantAgent, VariantReference}

// ours are our variants, each compared with the reference.
var ours = []string{VariantBridge, VariantTransparent, VariantAgent}

// VariantTitle names a variant for people.
func VariantTitle(v string) string {
	switch v {
	case VariantBridge:
		return "azure-vnet bridge"
	case VariantTransparent:
		return "azure-vnet transparent"
	case VariantAgent:
		return "azure-vnet bridge + vnetd"
	case VariantReference:
		return "bridge + host-local"
	}
	return v
}

// Config says what to measure and how long.
type Config struct {
	BinDir  string // azure-vnet, azure-vnet-ipam, bridge, host-local
	WorkDir string // scratch for state, caches, logs; tmpfs like /var/run
	Command string // how the run was started, for the report

	Quick          bool
	Pods           int   // sequential ADDs, then DELs, per variant
	Bursts         []int // concurrent ADDs, then DELs
	BurstRounds    int
	Secondaries    int // per pod VM's NIC; at least the largest burst
	IperfSeconds   int
	LatencySeconds int
	DatapathRounds int

	// Logf reports progress; nil discards it.
	Logf func(format string, args ...any)
}

// DefaultConfig is the full benchmark, or with quick a smoke run of a few
// seconds that only proves the harness works.
func DefaultConfig(quick bool) Config {
	if quick {
		return Config{Quick: true, Pods: 10, Bursts: []int{16}, BurstRounds: 1, Secondaries: 24,
			IperfSeconds: 1, LatencySeconds: 1, DatapathRounds: 1}
	}
	return Config{Pods: 200, Bursts: []int{16, 64, 250}, BurstRounds: 3, Secondaries: 256,
		IperfSeconds: 4, LatencySeconds: 3, DatapathRounds: 3}
}

func (c Config) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// Results is everything one run measured; results.json holds it.
type Results struct {
	Version   string       `json:"version"`
	Command   string       `json:"command"`
	Quick     bool         `json:"quick"`
	Started   time.Time    `json:"started"`
	Seconds   float64      `json:"seconds"`
	Machine   Machine      `json:"machine"`
	Params    Params       `json:"params"`
	Setup     []*Setup     `json:"setup"`
	Bursts    []*Burst     `json:"bursts"`
	Footprint []*Footprint `json:"footprint"`
	Profiles  []Profile    `json:"profiles"`
	Datapath  []*Path      `json:"datapath"`
	// AgentRSSMB is vnetd's resident size after the bursts (VmRSS) and
	// its peak over the run (VmHWM).
	AgentRSSMB     float64  `json:"agent_rss_mb"`
	AgentPeakRSSMB float64  `json:"agent_peak_rss_mb"`
	Targets        []Target `json:"targets"`
}

// Params are the run's sizes and durations.
type Params struct {
	Pods           int    `json:"pods"`
	Bursts         []int  `json:"bursts"`
	BurstRounds    int    `json:"burst_rounds"`
	Secondaries    int    `json:"secondaries"`
	IperfSeconds   int    `json:"iperf_seconds"`
	LatencySeconds int    `json:"latency_seconds"`
	DatapathRounds int    `json:"datapath_rounds"`
	FootprintCalls int    `json:"footprint_calls"`
	CNIVersion     string `json:"cni_version"`
	OurConf        string `json:"our_conflist"`
	RefConf        string `json:"reference_conflist"`
}

// Machine describes where the run happened, and how busy it was.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	MemoryGiB int    `json:"memory_gib"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	Iperf3    string `json:"iperf3"`
	Sockperf  string `json:"sockperf"`
	// FaultMicros is the cost of one page fault on fresh memory.
	FaultMicros float64 `json:"page_fault_us"`
	LoadBefore  string  `json:"loadavg_before"`
	LoadAfter   string  `json:"loadavg_after"`
	// BusyBefore and BusyAfter are the share of CPU time spent outside
	// idle over one second, before and after the run.
	BusyBefore float64 `json:"busy_before"`
	BusyAfter  float64 `json:"busy_after"`
}

// Setup is one variant's one-pod-at-a-time latency: ADD pods one after
// another up to Params.Pods, then DEL them one after another.
type Setup struct {
	Variant     string   `json:"variant"`
	FirstAddMS  float64  `json:"first_add_ms"` // the warm-up ADD that also sets up the network
	AddMS       Dist     `json:"add_ms"`       // the libcni call, as a runtime sees it
	DelMS       Dist     `json:"del_ms"`
	AddExecMS   Dist     `json:"add_exec_ms"` // the plugin processes alone
	DelExecMS   Dist     `json:"del_exec_ms"`
	AddCPUMS    Dist     `json:"add_cpu_ms"` // user + system
	DelCPUMS    Dist     `json:"del_cpu_ms"`
	AddFaults   Dist     `json:"add_page_faults"` // minor page faults of the call's processes
	DelFaults   Dist     `json:"del_page_faults"`
	Failures    int      `json:"failures"`
	Duplicates  int      `json:"duplicates"`
	FirstErrors []string `json:"first_errors,omitempty"`
	// Every call's libcni wall time, in the order made.
	AddSamplesMS []float64 `json:"add_samples_ms"`
	DelSamplesMS []float64 `json:"del_samples_ms"`
}

// Footprint is what one plugin call costs the node: peak RSS of the
// call's processes (the largest of them; measured in separate calls run
// under GNU time, see recorder) and CPU time (user + system, from the
// sequential calls' rusage).
type Footprint struct {
	Variant  string `json:"variant"`
	AddRSSMB Dist   `json:"add_rss_mb"` // 10^6 bytes
	DelRSSMB Dist   `json:"del_rss_mb"`
	AddCPUMS Dist   `json:"add_cpu_ms"`
	DelCPUMS Dist   `json:"del_cpu_ms"`
}

// Burst is one variant's concurrent ADDs and DELs of Size pods.
type Burst struct {
	Variant     string       `json:"variant"`
	Size        int          `json:"size"`
	Rounds      []BurstRound `json:"rounds"`
	AddWallMS   Dist         `json:"add_wall_ms"` // over rounds: start to the last ADD returned
	DelWallMS   Dist         `json:"del_wall_ms"`
	AddMS       Dist         `json:"add_ms"` // per call, all rounds
	DelMS       Dist         `json:"del_ms"`
	Failures    int          `json:"failures"`
	Duplicates  int          `json:"duplicates"`
	FirstErrors []string     `json:"first_errors,omitempty"`
	// Every call's libcni wall time, all rounds.
	AddSamplesMS []float64 `json:"add_samples_ms"`
	DelSamplesMS []float64 `json:"del_samples_ms"`
}

// BurstRound is one burst.
type BurstRound struct {
	AddWallMS   float64 `json:"add_wall_ms"`
	DelWallMS   float64 `json:"del_wall_ms"`
	AddFailures int     `json:"add_failures"`
	DelFailures int     `json:"del_failures"`
	Duplicates  int     `json:"duplicates"`
}

// Profile is where one of our commands spends its time, by phase: the
// plugin's own trace phases, then the process around them ("process":
// exec, runtime start, exit) and libcni around that ("libcni").
type Profile struct {
	Variant string  `json:"variant"`
	Command string  `json:"command"` // ADD or DEL
	Source  string  `json:"source"`  // which calls: "sequential", "burst 250"
	N       int     `json:"n"`
	Phases  []Phase `json:"phases"`
}

// Phase is one phase's time across the profiled calls, in milliseconds.
type Phase struct {
	Name string  `json:"name"`
	P50  float64 `json:"p50_ms"`
	Mean float64 `json:"mean_ms"`
	P90  float64 `json:"p90_ms"`
}

// Path is one datapath measurement across rounds: TCP throughput with one
// and four streams, and TCP request/response round-trip time.
type Path struct {
	Mode   string    `json:"mode"` // raw (no CNI), bridge, transparent
	Kind   string    `json:"kind"` // vm-vm, pod-pod-cross, pod-pod-local
	From   string    `json:"from"`
	To     string    `json:"to"`
	Gbps1  []float64 `json:"gbps_1_stream"`
	Gbps4  []float64 `json:"gbps_4_streams"`
	RTTus  []float64 `json:"rtt_avg_us"`
	RTT99  []float64 `json:"rtt_p99_us"`
	Errors []string  `json:"errors,omitempty"`
}

// Path kinds.
const (
	KindVMVM        = "vm-vm"
	KindPodPodCross = "pod-pod-cross"
	KindPodPodLocal = "pod-pod-local"
	ModeRaw         = "raw"
)

// Target is one of the targets and whether the run met it.
type Target struct {
	Name  string  `json:"name"`
	Want  string  `json:"want"`
	Got   string  `json:"got"`
	Value float64 `json:"value"`
	Met   bool    `json:"met"`
}
