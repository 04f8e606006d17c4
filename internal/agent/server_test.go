package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/netconf"
)

// fakeRunner answers every command with a fixed response and records the
// requests it got.
type fakeRunner struct {
	mu   sync.Mutex
	got  []agentapi.Request
	resp agentapi.Response
	// gate, when set, is received from before answering: the test decides
	// when each command ends.
	gate    chan struct{}
	entered chan struct{}
	in, max int
}

func (f *fakeRunner) Serve(req *agentapi.Request) *agentapi.Response {
	f.mu.Lock()
	f.got = append(f.got, *req)
	f.in++
	if f.in > f.max {
		f.max = f.in
	}
	f.mu.Unlock()
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	f.in--
	f.mu.Unlock()
	r := f.resp
	return &r
}

// newTestAgent is an agent on a temporary state directory whose plugins
// are fakes, serving on its socket until the test ends (no reconciler, no
// refresher, no HTTP).
func newTestAgent(t *testing.T, maxInFlight int, main, ipam *fakeRunner) (*Agent, string) {
	t.Helper()
	dir := t.TempDir()
	a := New(Config{StateDir: dir, MaxInFlight: maxInFlight, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	a.runners = map[string]runner{netconf.PluginType: main, netconf.IPAMType: ipam}
	sock := agentapi.SocketPath(dir)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return a, sock
}

const testConf = `{"cniVersion":"1.0.0","name":"azure","type":"azure-vnet"}`

func TestServeForwardsToThePlugin(t *testing.T) {
	main := &fakeRunner{resp: agentapi.Response{Proto: agentapi.Proto, Stdout: []byte(`{"cniVersion":"1.0.0"}`)}}
	ipam := &fakeRunner{resp: agentapi.Response{Proto: agentapi.Proto, Stdout: []byte(`{"ipam":true}`)}}
	_, sock := newTestAgent(t, 4, main, ipam)

	for _, tc := range []struct {
		plugin string
		want   string
		fake   *fakeRunner
	}{
		{netconf.PluginType, `{"cniVersion":"1.0.0"}`, main},
		{netconf.IPAMType, `{"ipam":true}`, ipam},
	} {
		req := &agentapi.Request{Plugin: tc.plugin, Command: "ADD", ContainerID: "c1", IfName: "eth0", Netns: "/run/netns/p1", Stdin: []byte(testConf)}
		resp, err := agentapi.Call(sock, req)
		if err != nil {
			t.Fatalf("Call %s: %v", tc.plugin, err)
		}
		if string(resp.Stdout) != tc.want || resp.Error != nil {
			t.Errorf("%s ADD answered stdout %q error %v, want %q", tc.plugin, resp.Stdout, resp.Error, tc.want)
		}
		tc.fake.mu.Lock()
		defer tc.fake.mu.Unlock()
		if len(tc.fake.got) != 1 {
			t.Fatalf("%s runner got %d requests, want 1", tc.plugin, len(tc.fake.got))
		}
		if d := cmp.Diff(*req, tc.fake.got[0]); d != "" {
			t.Errorf("%s runner got a different request (-sent +got):\n%s", tc.plugin, d)
		}
	}
}

func TestServeUnknownPlugin(t *testing.T) {
	_, sock := newTestAgent(t, 4, &fakeRunner{}, &fakeRunner{})
	resp, err := agentapi.Call(sock, &agentapi.Request{Plugin: "bridge", Command: "ADD", Stdin: []byte(testConf)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Error == nil || resp.Error.Code != agentapi.CodeMismatch || !strings.Contains(resp.Error.Msg, `"bridge"`) {
		t.Errorf("ADD for plugin bridge answered %+v, want error %d naming it", resp.Error, agentapi.CodeMismatch)
	}
}

// TestServeProtocolMismatch sends what a plugin of another release would:
// the real plugins (not fakes) must refuse it, naming both versions.
func TestServeProtocolMismatch(t *testing.T) {
	dir := t.TempDir()
	a := New(Config{StateDir: dir, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	for _, plugin := range []string{netconf.PluginType, netconf.IPAMType} {
		resp := a.run(&agentapi.Request{Proto: agentapi.Proto + 1, Plugin: plugin, Version: "v9.9.9", Command: "ADD", Stdin: []byte(testConf)})
		if resp.Error == nil || resp.Error.Code != agentapi.CodeMismatch {
			t.Fatalf("%s request of protocol %d answered %+v, want error %d", plugin, agentapi.Proto+1, resp, agentapi.CodeMismatch)
		}
		for _, want := range []string{"v9.9.9", "protocol 2", "speaks 1", "one release"} {
			if !strings.Contains(resp.Error.Msg, want) {
				t.Errorf("%s mismatch message %q lacks %q", plugin, resp.Error.Msg, want)
			}
		}
		if resp.Proto != agentapi.Proto {
			t.Errorf("mismatch answer carries protocol %d, want the agent's %d", resp.Proto, agentapi.Proto)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a refused request left files in the state directory: %v", entries)
	}
}

func TestServeLearnsNetworksFromSuccessfulADDs(t *testing.T) {
	main := &fakeRunner{resp: agentapi.Response{Proto: agentapi.Proto, Stdout: []byte(`{}`)}}
	failing := &fakeRunner{resp: agentapi.Response{Proto: agentapi.Proto, Error: &agentapi.Error{Code: agentapi.CodeTryAgainLater, Msg: "pool exhausted"}}}
	a, sock := newTestAgent(t, 4, main, failing)

	call := func(plugin, cmd, conf string) {
		t.Helper()
		if _, err := agentapi.Call(sock, &agentapi.Request{Plugin: plugin, Command: cmd, ContainerID: "c", IfName: "eth0", Stdin: []byte(conf)}); err != nil {
			t.Fatalf("Call %s %s: %v", plugin, cmd, err)
		}
	}
	call(netconf.PluginType, "DEL", `{"name":"deleted-only","type":"azure-vnet"}`)
	call(netconf.IPAMType, "ADD", `{"name":"failed-add","type":"azure-vnet-ipam"}`)
	call(netconf.PluginType, "ADD", `{"name":"not json`)
	call(netconf.PluginType, "ADD", testConf)

	a.mu.Lock()
	var learnt []string
	for n := range a.networks {
		learnt = append(learnt, n)
	}
	ipamLearnt := len(a.ipamNets)
	a.mu.Unlock()
	if d := cmp.Diff([]string{"azure"}, learnt); d != "" || ipamLearnt != 0 {
		t.Errorf("networks learnt (-want +got):\n%s\nipam networks: %d, want 0 (only successful ADDs teach)", d, ipamLearnt)
	}

	// A restarted agent knows them from the networks file.
	b := New(Config{StateDir: a.cfg.StateDir, Log: a.log})
	if err := b.loadNetworks(); err != nil {
		t.Fatalf("load networks file: %v", err)
	}
	if got := string(b.networks["azure"]); got != testConf {
		t.Errorf("reloaded network azure = %q, want %q", got, testConf)
	}

	// Metrics: the failed ADD counts as an allocation failure with its code.
	if got := testutil.ToFloat64(a.metrics.allocFails.WithLabelValues(netconf.IPAMType, "11")); got != 1 {
		t.Errorf("vnetd_allocation_failures_total{plugin=ipam,code=11} = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(a.metrics.requests); got != 3 {
		t.Errorf("request histogram has %d series, want 3 (DEL ok, ipam ADD 11, ADD ok)", got)
	}
}

func TestMetricsObserve(t *testing.T) {
	m := newMetrics()
	ok := &agentapi.Response{}
	fail := &agentapi.Response{Error: &agentapi.Error{Code: 7, Msg: "bad"}}
	m.observe(&agentapi.Request{Plugin: "azure-vnet", Command: "ADD"}, ok, 0)
	m.observe(&agentapi.Request{Plugin: "azure-vnet", Command: "ADD"}, fail, 0)
	m.observe(&agentapi.Request{Plugin: "azure-vnet", Command: "DEL"}, fail, 0)
	want := `
# HELP vnetd_allocation_failures_total ADDs that failed, by CNI error code (11: no free address or the pool source is unavailable).
# TYPE vnetd_allocation_failures_total counter
vnetd_allocation_failures_total{code="7",plugin="azure-vnet"} 1
`
	if err := testutil.CollectAndCompare(m.allocFails, strings.NewReader(want)); err != nil {
		t.Errorf("allocation failures after an ok ADD, a failed ADD and a failed DEL: %v", err)
	}
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, f := range fams {
		if f.GetName() != "vnetd_cni_request_duration_seconds" {
			continue
		}
		for _, s := range f.GetMetric() {
			var key []string
			for _, l := range s.GetLabel() {
				key = append(key, l.GetName()+"="+l.GetValue())
			}
			got[strings.Join(key, ",")] = s.GetHistogram().GetSampleCount()
		}
	}
	wantCounts := map[string]uint64{
		"command=ADD,plugin=azure-vnet,result=ok": 1,
		"command=ADD,plugin=azure-vnet,result=7":  1,
		"command=DEL,plugin=azure-vnet,result=7":  1,
	}
	if d := cmp.Diff(wantCounts, got); d != "" {
		t.Errorf("request durations observed (-want +got):\n%s", d)
	}
}

// TestServeBoundsCommandsInFlight holds every command in the fake and
// checks that no more than MaxInFlight ever ran at once.
func TestServeBoundsCommandsInFlight(t *testing.T) {
	const limit, calls = 2, 6
	main := &fakeRunner{resp: agentapi.Response{Proto: agentapi.Proto}, gate: make(chan struct{}), entered: make(chan struct{}, calls)}
	_, sock := newTestAgent(t, limit, main, &fakeRunner{})
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := agentapi.Call(sock, &agentapi.Request{Plugin: netconf.PluginType, Command: "DEL", Stdin: []byte(testConf)})
			errs <- err
		}()
	}
	// Release one command at a time, each after one has entered.
	for i := 0; i < calls; i++ {
		<-main.entered
		main.gate <- struct{}{}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Call: %v", err)
		}
	}
	main.mu.Lock()
	defer main.mu.Unlock()
	if main.max > limit {
		t.Errorf("%d commands ran at once, want at most MaxInFlight=%d", main.max, limit)
	}
}

func TestServeStatus(t *testing.T) {
	a, sock := newTestAgent(t, 4, &fakeRunner{}, &fakeRunner{})
	a.setReady(true)
	a.mu.Lock()
	a.networks["azure"] = []byte(testConf)
	a.repairs["fdb"] = 2
	a.mu.Unlock()
	resp, err := agentapi.Call(sock, &agentapi.Request{Command: agentapi.StatusCommand})
	if err != nil {
		t.Fatal(err)
	}
	var st agentapi.Status
	if err := json.Unmarshal(resp.Stdout, &st); err != nil {
		t.Fatalf("status answer %q: %v", resp.Stdout, err)
	}
	if !st.Ready || st.PID != os.Getpid() || st.StateDir != a.cfg.StateDir || !cmp.Equal(st.Networks, []string{"azure"}) || st.Repairs["fdb"] != 2 {
		t.Errorf("status = %+v, want ready, this PID, the state dir, network azure and 2 fdb repairs", st)
	}
}

func TestLockStateDirOnePerDirectory(t *testing.T) {
	dir := t.TempDir()
	first, err := lockStateDir(dir)
	if err != nil {
		t.Fatalf("first lock: %v", err)
	}
	if _, err := lockStateDir(dir); !errors.Is(err, ErrRunning) {
		t.Errorf("second lock while the first is held: %v, want ErrRunning", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, agentapi.LockName)); strings.TrimSpace(string(b)) == "" {
		t.Errorf("lock file holds %q, want the holder's PID", b)
	}
	// Another directory is another node's (or VM's) agent.
	other, err := lockStateDir(t.TempDir())
	if err != nil {
		t.Errorf("lock of another directory: %v", err)
	} else {
		other.Close()
	}
	first.Close()
	again, err := lockStateDir(dir)
	if err != nil {
		t.Fatalf("lock after the holder closed it: %v", err)
	}
	again.Close()
}

// TestRunRefusesASecondAgent runs a whole agent (no HTTP) on a temporary
// state directory and a second one beside it. The agent knows no network,
// so its reconciler only watches this namespace.
func TestRunRefusesASecondAgent(t *testing.T) {
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	first := New(Config{StateDir: dir, Log: quiet})
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("first agent: %v", err)
		}
	}()
	// Wait until the first answers on its socket (or has failed).
	for {
		if _, err := agentapi.Call(agentapi.SocketPath(dir), &agentapi.Request{Command: agentapi.StatusCommand}); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("first agent ended: %v", err)
		default:
		}
		runtime.Gosched()
	}
	err := New(Config{StateDir: dir, Log: quiet}).Run(context.Background())
	if !errors.Is(err, ErrRunning) {
		t.Fatalf("second agent on the same state directory: %v, want ErrRunning", err)
	}
	// The refused agent must not have taken the first one's socket.
	if _, err := agentapi.Call(agentapi.SocketPath(dir), &agentapi.Request{Command: agentapi.StatusCommand}); err != nil {
		t.Errorf("first agent after the second was refused: %v", err)
	}
}

// TestForeignNamespace: an agent does nothing for a plugin of another
// network namespace (its VM's namespace was made anew under it) and says
// so, and the plugin runs the command itself; requests of its own
// namespace and of plugins that do not say are served.
func TestForeignNamespace(t *testing.T) {
	a := New(Config{StateDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	foreign := a.run(&agentapi.Request{Proto: agentapi.Proto, Plugin: netconf.PluginType, Command: "STATUS", HostNetNS: "0:0", Stdin: []byte(`{}`)})
	if !foreign.Foreign || foreign.Error != nil {
		t.Errorf("request from another namespace: %+v, want Foreign and no error", foreign)
	}
	own := a.run(&agentapi.Request{Proto: agentapi.Proto, Plugin: netconf.PluginType, Command: "STATUS", HostNetNS: agentapi.NetNSID(), Stdin: []byte(`{}`)})
	if own.Foreign {
		t.Errorf("request from the agent's own namespace refused as foreign")
	}
	if own.Error == nil {
		t.Errorf("STATUS with an empty config: no error, want the config error from the plugin's own code")
	}
}
