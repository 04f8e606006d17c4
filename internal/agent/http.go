package agent

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/buildinfo"
	"github.com/vnetcni/vnetcni/internal/ipam"
	"github.com/vnetcni/vnetcni/internal/store"
)

func (a *Agent) status(pid int) agentapi.Status {
	a.mu.Lock()
	s := agentapi.Status{Version: buildinfo.String(), PID: pid, StateDir: a.cfg.StateDir, Ready: a.ready, LastResync: a.lastPass, Repairs: map[string]int{}}
	for n := range a.networks {
		s.Networks = append(s.Networks, n)
	}
	for k, v := range a.repairs {
		s.Repairs[k] = v
	}
	a.mu.Unlock()
	sort.Strings(s.Networks)
	if st, err := store.New(a.cfg.StateDir).Read(); err == nil {
		for id, p := range st.Pools {
			s.Pools = append(s.Pools, agentapi.PoolStatus{NIC: id, Source: p.Source, ReadAt: p.ReadAt, Total: len(p.Addresses), Used: ipam.InUse(st, p), Free: len(ipam.Free(st, p))})
		}
		sort.Slice(s.Pools, func(i, j int) bool { return s.Pools[i].NIC < s.Pools[j].NIC })
	}
	return s
}

// startHTTP serves /metrics, /healthz, /readyz and /status on addr.
func (a *Agent) startHTTP(addr string) (*http.Server, error) {
	a.metrics.reg.MustRegister(newPoolCollector(store.New(a.cfg.StateDir)))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		// Alive means the socket answers: a plugin connecting now is served.
		if err := a.selfCheck(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		ready := a.ready
		a.mu.Unlock()
		if !ready {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if err := a.selfCheck(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.status(os.Getpid()))
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, nil
}

// selfCheck connects to the agent's own socket and asks for its status.
func (a *Agent) selfCheck() error {
	_, err := agentapi.Call(agentapi.SocketPath(a.cfg.StateDir), &agentapi.Request{Plugin: "vnetd", Version: buildinfo.String(), Command: agentapi.StatusCommand})
	return err
}
