// Package cniplugin is the CNI boundary of azure-vnet and azure-vnet-ipam:
// it turns CNI commands (ADD, DEL, CHECK, GC, STATUS) into calls on the
// ipam, store and datapath packages, and their errors into CNI error codes.
package cniplugin

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/buildinfo"
	"github.com/vnetcni/vnetcni/internal/incumbent"
	"github.com/vnetcni/vnetcni/internal/ipam"
	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/store"
)

// Supported CNI versions.
var Versions = version.PluginSupports(agentapi.CNIVersions...)

// Environment variables.
const (
	EnvLogFile = "AZURE_VNET_LOG_FILE" // default /var/log/azure-vnet.log (rotated at LogMaxSize); "-" for stderr, "off" for none
	EnvTrace   = "AZURE_VNET_TRACE"    // "1": print per-phase timings of each call to stderr
)

// DefaultLogFile is where the plugins log, as Azure's do.
const DefaultLogFile = "/var/log/azure-vnet.log"

// Plugin holds what every command needs.
type Plugin struct {
	Name     string // azure-vnet or azure-vnet-ipam
	StateDir string
	Log      *slog.Logger
	Stdout   io.Writer // CNI results
	Stderr   io.Writer
	Now      func() time.Time
	Trace    bool

	openKernel func() (kernel, error)
	// OnStateWrite, when set, hears of every state file write (the agent
	// counts them).
	OnStateWrite func()
	// StateCommitter, when set (by the agent), keeps the state in memory
	// between commands and group-commits their updates.
	StateCommitter *store.Committer
	// Ready, when set (by the agent), spares ADDs the check of the
	// network's static setup for a while after one found it intact.
	Ready *ReadyCache
	// IncumbentDir holds the state files of Azure's own azure-vnet, whose
	// pods are adopted when the network is first set up.
	IncumbentDir string
	// Policy, when set (by vnetd when it hosts network policy), enforces
	// each new pod's policies before ADD wires it (policy.go).
	Policy PolicyHost
}

// New returns a plugin configured from the environment. Nothing is opened
// until a command runs: VERSION touches no log, lock or state file.
func New(name string) *Plugin {
	return &Plugin{
		Name:         name,
		StateDir:     store.DirFromEnv(),
		IncumbentDir: incumbent.DirFromEnv(),
		Stdout:       os.Stdout,
		Stderr:       os.Stderr,
		Now:          time.Now,
		Trace:        os.Getenv(EnvTrace) == "1",

		openKernel: openHostKernel,
	}
}

// print writes a result in the CNI version the caller asked for.
func (p *Plugin) print(res types.Result, cniVersion string) error {
	r, err := res.GetAsVersion(cniVersion)
	if err != nil {
		return err
	}
	return r.PrintTo(p.Stdout)
}

// OpenLog is the log of a plugin's CNI calls: $AZURE_VNET_LOG_FILE, by
// default DefaultLogFile. The agent logs the calls it serves there too, so
// an operator finds every call in one place whichever path served it.
func OpenLog(name string) *slog.Logger { return openLog(os.Getenv(EnvLogFile), name) }

func openLog(path, name string) *slog.Logger {
	var w io.Writer
	switch path {
	case "off":
		w = io.Discard
	case "-":
		w = os.Stderr
	case "":
		path = DefaultLogFile
		fallthrough
	default:
		f, err := openLogFile(path, LogMaxSize, LogBackups)
		if err != nil {
			w = io.Discard
		} else {
			w = f
		}
	}
	return slog.New(slog.NewTextHandler(w, nil)).With("plugin", name, "pid", os.Getpid())
}

// About is printed when the binary runs without CNI_COMMAND.
func About(name string) string {
	return fmt.Sprintf("CNI plugin %s %s", name, buildinfo.String())
}

// Funcs returns azure-vnet's CNI command handlers.
func (p *Plugin) Funcs() skel.CNIFuncs { return p.skelFuncs() }

func (p *Plugin) skelFuncs() skel.CNIFuncs {
	v := p.verbs()
	return skel.CNIFuncs{
		Add:    p.command("ADD", v["ADD"]),
		Del:    p.command("DEL", v["DEL"]),
		Check:  p.command("CHECK", v["CHECK"]),
		GC:     p.command("GC", v["GC"]),
		Status: p.command("STATUS", v["STATUS"]),
	}
}

func (p *Plugin) command(verb string, fn func(*skel.CmdArgs, *tracer) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		if handled, err := p.viaAgent(verb, args); handled {
			return err
		}
		return p.run(verb, fn, args)
	}
}

// run executes one command in this process, its result printed to p.Stdout.
func (p *Plugin) run(verb string, fn func(*skel.CmdArgs, *tracer) error, args *skel.CmdArgs) error {
	if p.Log == nil {
		p.Log = OpenLog(p.Name)
	}
	tr := newTracer(p.Trace)
	err := fn(args, tr)
	attrs := []any{"cmd", verb, "container", args.ContainerID, "ifname", args.IfName, "netns", args.Netns, "duration", tr.total()}
	if err != nil {
		p.Log.Error("failed", append(attrs, "err", err)...)
	} else {
		p.Log.Info("done", attrs...)
	}
	if p.Trace {
		fmt.Fprintf(p.Stderr, "%s trace %s %s\n", p.Name, verb, tr)
	}
	return toCNIError(err)
}

// toCNIError maps errors to CNI error codes at the binary boundary.
func toCNIError(err error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	var ex *ipam.ExhaustedError
	switch {
	case netconf.IsFieldError(err):
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	case errors.As(err, &ex):
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	case errors.Is(err, store.ErrLockTimeout):
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	case errors.Is(err, errSource), errors.Is(err, errPolicy):
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	case errors.Is(err, errNetNS):
		return types.NewError(types.ErrInvalidNetNS, err.Error(), "")
	case errors.Is(err, errArgs):
		return types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}

// Sentinel kinds, wrapped into errors to pick their CNI code.
var (
	errSource = errors.New("address pool source unavailable")
	errNetNS  = errors.New("invalid network namespace")
	errArgs   = errors.New("invalid CNI_ARGS")
)

// kind wraps err so that errors.Is(err, k) holds while the message stays err's.
type kinded struct {
	kind error
	err  error
}

func (k kinded) Error() string       { return k.err.Error() }
func (k kinded) Unwrap() []error     { return []error{k.err, k.kind} }
func withKind(kind, err error) error { return kinded{kind, err} }

// podArgs are the CNI_ARGS the plugins read. Unknown keys are ignored.
type podArgs struct {
	Namespace string
	Name      string
	InfraID   string
	UID       string
}

func parseArgs(s string) (podArgs, error) {
	var a podArgs
	if strings.TrimSpace(s) == "" {
		return a, nil
	}
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return a, withKind(errArgs, fmt.Errorf("CNI_ARGS: %q is not KEY=VALUE", kv))
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			a.Namespace = v
		case "K8S_POD_NAME":
			a.Name = v
		case "K8S_POD_INFRA_CONTAINER_ID":
			a.InfraID = v
		case "K8S_POD_UID":
			a.UID = v
		}
	}
	return a, nil
}

// tracer records how long each phase of a command took.
type tracer struct {
	on    bool
	start time.Time
	last  time.Time
	marks []string
}

func newTracer(on bool) *tracer {
	now := time.Now()
	return &tracer{on: on, start: now, last: now}
}

// mark ends the current phase.
func (t *tracer) mark(phase string) {
	if !t.on {
		return
	}
	now := time.Now()
	t.marks = append(t.marks, fmt.Sprintf("%s=%.3fms", phase, float64(now.Sub(t.last).Microseconds())/1000))
	t.last = now
}

func (t *tracer) total() time.Duration { return time.Since(t.start) }

func (t *tracer) String() string {
	return strings.Join(append(t.marks, fmt.Sprintf("total=%.3fms", float64(t.total().Microseconds())/1000)), " ")
}
