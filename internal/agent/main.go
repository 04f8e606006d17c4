package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/vnetcni/vnetcni/internal/buildinfo"
	"github.com/vnetcni/vnetcni/internal/store"
)

// Main is vnetd's command line; it returns the exit code (2: another agent
// serves the node).
func Main(args []string) int {
	fs := flag.NewFlagSet("vnetd", flag.ContinueOnError)
	var cfg Config
	fs.StringVar(&cfg.StateDir, "state-dir", store.DirFromEnv(), "the plugins' state directory (default $"+store.EnvDir+" or "+store.DefaultDir+")")
	fs.StringVar(&cfg.HTTPAddr, "http", DefaultHTTPAddr, "address of /metrics, /healthz, /readyz and /status (\"\" for none)")
	fs.DurationVar(&cfg.Resync, "resync", DefaultResync, "full datapath reconcile at least this often")
	fs.DurationVar(&cfg.PoolRefresh, "pool-refresh", DefaultPoolRefresh, "how often to look at the address pools' age")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", DefaultMaxInFlight, "CNI commands run at once")
	fs.BoolVar(&cfg.Policy.Enabled, "network-policy", false, "enforce Kubernetes NetworkPolicies on this node (watches pods, namespaces and networkpolicies)")
	fs.StringVar(&cfg.Policy.Kubeconfig, "kubeconfig", "", "kubeconfig of the API server, for --network-policy and the node's pod CIDR (default: in-cluster config, else $KUBECONFIG)")
	fs.StringVar(&cfg.Policy.NodeName, "node-name", DefaultNodeName(), "this node's name in the API (default $"+EnvNodeName+", else the hostname)")
	version := fs.Bool("version", false, "print the version and exit")
	logJSON := fs.Bool("log-json", false, "log JSON instead of text")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	if *version {
		fmt.Println("vnetd", buildinfo.String())
		return 0
	}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	if *logJSON {
		h = slog.NewJSONHandler(os.Stderr, nil)
	}
	cfg.Log = slog.New(h)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := New(cfg).Run(ctx); err != nil {
		cfg.Log.Error("vnetd", "err", err)
		if errors.Is(err, ErrRunning) {
			return 2
		}
		return 1
	}
	return 0
}
