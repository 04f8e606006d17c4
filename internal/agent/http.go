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

// Status is what `vnetctl status` shows, from /status or the socket.
type Status struct {
	Version    string         `json:"version"`
	PID        int            `json:"pid"`
	StateDir   string         `json:"stateDir"`
	Ready      bool           `json:"ready"`
	Networks   []string       `json:"networks"`
	LastResync time.Time      `json:"lastResync,omitzero"`
	Repairs    map[string]int `json:"repairs"`
	Pools      []PoolStatus   `json:"pools"`
}

// PoolStatus is one NIC's pool.
type PoolStatus struct {
	NIC    string    `json:"nic"`
	Source string    `json:"source"`
	ReadAt time.Time `json:"readAt"`
	Total  int       `json:"total"`
	Used   int       `json:"used"`
	Free   int       `json:"free"`
}

// StatusCommand is the agentapi command that asks the agent for its Status
// over the socket (answered in Response.Stdout as JSON).
const StatusCommand = "VNETD-STATUS"

func (a *Agent) status(pid int) Status {
	a.mu.Lock()
	s := Status{Version: buildinfo.String(), PID: pid, StateDir: a.cfg.StateDir, Ready: a.ready, LastResync: a.lastPass, Repairs: map[string]int{}}
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
			s.Pools = append(s.Pools, PoolStatus{NIC: id, Source: p.Source, ReadAt: p.ReadAt, Total: len(p.Addresses), Used: ipam.InUse(st, p), Free: len(ipam.Free(st, p))})
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
	_, err := agentapi.Call(agentapi.SocketPath(a.cfg.StateDir), &agentapi.Request{Plugin: "vnetd", Version: buildinfo.String(), Command: StatusCommand})
	return err
}

// GetStatus asks the agent serving stateDir for its status over its socket.
func GetStatus(stateDir string) (*Status, error) {
	resp, err := agentapi.Call(agentapi.SocketPath(stateDir), &agentapi.Request{Plugin: "vnetctl", Version: buildinfo.String(), Command: StatusCommand})
	if err != nil {
		return nil, err
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	var s Status
	if err := json.Unmarshal(resp.Stdout, &s); err != nil {
		return nil, fmt.Errorf("decode agent status: %w", err)
	}
	return &s, nil
}
