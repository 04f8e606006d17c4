// Package agent is vnetd, the node agent: it serves the CNI plugins over a
// unix socket (internal/agentapi), running their commands in-process with
// the plugins' own code, state file and locks; keeps each network's
// address pool fresh in the background; reconciles the node's datapath on
// kernel change notifications and periodically; and exports Prometheus
// metrics, health and readiness over HTTP.
//
// Because the agent runs the plugins' code under the plugins' locks, an
// agent and standalone plugins may work on one node at once, and the agent
// may start or die at any instant of a burst: a plugin that finds no agent
// (or loses it mid-call) runs the command itself.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/buildinfo"
	"github.com/vnetcni/vnetcni/internal/cniplugin"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/store"
)

// Config is vnetd's configuration.
type Config struct {
	StateDir    string        // the plugins' state directory (store.DirFromEnv)
	HTTPAddr    string        // /metrics, /healthz, /readyz, /status; "" for none
	Resync      time.Duration // full reconcile at least this often
	PoolRefresh time.Duration // how often the refresher looks at the pools
	MaxInFlight int           // CNI commands run at once; more wait
	Policy      PolicyConfig  // Kubernetes network policy (policy.go)
	Log         *slog.Logger
}

// Defaults for Config's zero fields.
const (
	DefaultHTTPAddr    = "127.0.0.1:9443"
	DefaultResync      = 10 * time.Second
	DefaultPoolRefresh = 5 * time.Second
	DefaultMaxInFlight = 16

	// readyMaxAge bounds how long an ADD trusts an earlier check of its
	// network's static setup without a notification: what notifications
	// cannot tell (a sysctl, a failed monitor) is caught by the next
	// check or the periodic resync.
	readyMaxAge = 2 * time.Second
)

// ErrRunning is returned when another agent already serves the state
// directory.
var ErrRunning = errors.New("another vnetd already serves this node")

// Agent is a running vnetd.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	plugins map[string]*cniplugin.Plugin
	runners map[string]runner // what serves each plugin's commands: plugins, or fakes in tests
	rec     *cniplugin.Reconciler
	// setupOK spares ADDs the check of a network's static setup; kernel
	// notifications that may mean its loss invalidate it.
	setupOK *cniplugin.ReadyCache
	metrics *metrics
	sem     chan struct{}
	kick    chan struct{} // asks the reconciler for a pass now
	netns   string        // the network namespace served (agentapi.NetNSID)

	saveMu   sync.Mutex // one networks file writer at a time
	mu       sync.Mutex
	networks map[string][]byte // network name -> the stdin of its last ADD (azure-vnet)
	ipamNets map[string][]byte // the same for azure-vnet-ipam
	ready    bool
	lastPass time.Time
	repairs  map[string]int
	pol      *policyHost // nil: policy off
	podCIDR  *nodePodCIDR
}

// New returns an agent; nothing is opened until Run.
func New(cfg Config) *Agent {
	if cfg.Resync == 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.PoolRefresh == 0 {
		cfg.PoolRefresh = DefaultPoolRefresh
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	a := &Agent{
		cfg:      cfg,
		log:      cfg.Log,
		plugins:  map[string]*cniplugin.Plugin{},
		runners:  map[string]runner{},
		metrics:  newMetrics(),
		sem:      make(chan struct{}, cfg.MaxInFlight),
		kick:     make(chan struct{}, 1),
		networks: map[string][]byte{},
		ipamNets: map[string][]byte{},
		repairs:  map[string]int{},
		netns:    agentapi.NetNSID(),
	}
	// One in-memory state and one commit queue for both plugins' commands:
	// they share the state file.
	committer := store.NewCommitter(cfg.StateDir)
	a.setupOK = cniplugin.NewReadyCache(readyMaxAge)
	for _, name := range []string{netconf.PluginType, netconf.IPAMType} {
		p := cniplugin.New(name)
		p.StateDir = cfg.StateDir
		p.StateCommitter = committer
		p.Ready = a.setupOK
		p.Log = cniplugin.OpenLog(name).With("via", "vnetd")
		p.OnStateWrite = a.metrics.stateWrites.Inc
		a.plugins[name] = p
		a.runners[name] = p
	}
	a.rec = &cniplugin.Reconciler{P: a.plugins[netconf.PluginType]}
	node := cfg.Policy.NodeName
	if node == "" {
		node = DefaultNodeName()
	}
	a.podCIDR = newNodePodCIDR(cfg.Policy.Kubeconfig, node)
	return a
}

// Run serves until ctx ends. It fails with ErrRunning when another agent
// holds the state directory.
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(a.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	lock, err := lockStateDir(a.cfg.StateDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := a.loadNetworks(); err != nil {
		a.log.Warn("networks file unreadable; waiting for ADDs to learn the networks", "err", err)
	}

	// Holding the lock, a socket file left by a dead agent is ours to replace.
	sock := agentapi.SocketPath(a.cfg.StateDir)
	_ = os.Remove(sock)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sock, err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("listen on %s: %w", sock, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	if a.cfg.HTTPAddr != "" {
		srv, err := a.startHTTP(a.cfg.HTTPAddr)
		if err != nil {
			ln.Close()
			return err
		}
		defer srv.Close()
	}
	if err := a.startPolicy(ctx, &wg); err != nil {
		ln.Close()
		return err
	}
	wg.Add(3)
	go func() { defer wg.Done(); errc <- a.serve(ctx, ln) }()
	go func() { defer wg.Done(); a.refreshLoop(ctx) }()
	go func() { defer wg.Done(); a.reconcileLoop(ctx) }()
	a.metrics.agentVersion.WithLabelValues(buildinfo.String()).Set(1)
	a.log.Info("vnetd serving", "socket", sock, "http", a.cfg.HTTPAddr, "stateDir", a.cfg.StateDir, "pid", os.Getpid())
	a.setReady(true)
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	a.setReady(false)
	cancel()
	ln.Close()
	wg.Wait()
	return runErr
}

func (a *Agent) setReady(v bool) {
	a.mu.Lock()
	a.ready = v
	a.mu.Unlock()
}

// learn remembers a network's configuration from a successful ADD, for the
// pool refresher and the reconciler.
func (a *Agent) learn(req *agentapi.Request) {
	name, ok := networkName(req.Stdin)
	if !ok {
		return
	}
	a.mu.Lock()
	m := a.networks
	if req.Plugin == netconf.IPAMType {
		m = a.ipamNets
	}
	old, seen := m[name]
	changed := !seen || string(old) != string(req.Stdin)
	if changed {
		m[name] = append([]byte(nil), req.Stdin...)
	}
	a.mu.Unlock()
	if changed {
		if err := a.saveNetworks(); err != nil {
			a.log.Warn("save networks", "err", err)
		}
		a.poke()
	}
}

// poke asks the reconciler for a pass soon.
func (a *Agent) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// lockStateDir takes the state directory's agent lock (vnetd.lock) and
// writes this process's PID into it. It fails with ErrRunning when another
// process holds it; the lock lasts until the file is closed or the process
// ends, however it ends.
func lockStateDir(dir string) (*os.File, error) {
	lock, err := os.OpenFile(filepath.Join(dir, agentapi.LockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open agent lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s is locked)", ErrRunning, lock.Name())
		}
		return nil, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	_ = lock.Truncate(0)
	_, _ = fmt.Fprintf(lock, "%d\n", os.Getpid())
	return lock, nil
}
