package vnetlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vnetcni/vnetcni/lab/fabric"
	"github.com/vnetcni/vnetcni/lab/k8slab"
	"github.com/vnetcni/vnetcni/lab/probe"
)

// Serve runs a lab's services — wireserver, DNS, IMDS (with the VMs'
// managed-identity tokens), internet host, the cloud's management API
// (http://management.azure.com/, ARM-shaped: lab/cloud) — until SIGTERM or
// SIGINT. Its control socket starts and stops single services,
// to inject faults: POST /services/<name>/stop and /services/<name>/start.
func Serve(ctx context.Context, name string, log *slog.Logger) error {
	l, err := Load(name)
	if err != nil {
		return err
	}
	f := fabric.Open(l.Spec)
	c, arm, tokens, err := l.management(f)
	if err != nil {
		return fmt.Errorf("lab cloud API: %w", err)
	}
	defer c.Close()
	f.SetManagement(arm, tokens)
	svc, err := f.Serve()
	if err != nil {
		return fmt.Errorf("start lab services: %w", err)
	}
	defer svc.Close()
	if l.Spec.Image.DHCP {
		// The VMs' network managers: each keeps eth0's lease.
		for _, v := range l.Spec.VMs {
			dir := filepath.Join(l.VMDir(v.Name), "dhcp")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			c, err := fabric.StartDHCPClient(fabric.Open(l.Spec).VMNetNS(v.Name), "eth0", dir)
			if err != nil {
				return fmt.Errorf("start the DHCP client of %s: %w", v.Name, err)
			}
			defer c.Stop()
		}
	}

	_ = os.Remove(l.controlSock())
	ln, err := net.Listen("unix", l.controlSock())
	if err != nil {
		return fmt.Errorf("listen on control socket: %w", err)
	}
	defer os.Remove(l.controlSock())
	mux := http.NewServeMux()
	mux.HandleFunc("POST /services/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		var err error
		switch r.PathValue("action") {
		case "stop":
			err = svc.Stop(r.PathValue("name"))
		case "start":
			err = svc.Start(r.PathValue("name"))
		default:
			http.NotFound(w, r)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		log.Info("service", "name", r.PathValue("name"), "action", r.PathValue("action"))
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()

	if l.Kubernetes != nil {
		stop, err := forwardAPIServer(l, log)
		if err != nil {
			return err
		}
		defer stop()
	}

	if err := os.WriteFile(l.pidFile(), []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
		return err
	}
	log.Info("lab services running", "lab", name, "pid", os.Getpid())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		log.Info("stopping", "signal", s.String())
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	_ = os.Remove(l.pidFile())
	return nil
}

// Fault stops ("down") or starts ("up") one of a running lab's services.
func Fault(name, service, state string) error {
	l, err := Load(name)
	if err != nil {
		return err
	}
	action := map[string]string{"down": "stop", "up": "start"}[state]
	if action == "" {
		return fmt.Errorf("fault state %q: want down or up", state)
	}
	known := false
	for _, s := range fabric.ServiceNames() {
		known = known || s == service
	}
	if !known {
		return fmt.Errorf("unknown service %q (one of %s)", service, strings.Join(fabric.ServiceNames(), ", "))
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", l.controlSock())
		}}}
	resp, err := c.Post("http://lab/services/"+service+"/"+action, "text/plain", nil)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "no such file") || strings.Contains(err.Error(), "connection refused") {
			return fmt.Errorf("lab %s's services daemon is not running (vnetctl lab up --name %s restarts it)", name, name)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: HTTP %d", action, service, resp.StatusCode)
	}
	return nil
}

// forwardAPIServer lets operators on this machine reach the cluster: it
// listens on 127.0.0.1 (a port it picks, written for the kubeconfig) and
// relays each connection to the API server's VIP from inside the first
// node's namespace, as a jump box in the VNet would.
func forwardAPIServer(l *Lab, log *slog.Logger) (func(), error) {
	c := l.Kubernetes
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the API server forwarder: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.ForwardPortFile(), []byte(fmt.Sprintf("%d\n", port)), 0o644); err != nil {
		return nil, err
	}
	to := netip.AddrPortFrom(c.VIP, k8slab.APIServerPort)
	from := c.Nodes[0].NetNS
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := probe.DialTCP(from, to, 5*time.Second)
				if err != nil {
					log.Warn("API server forwarder", "err", err)
					return
				}
				defer out.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
				go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	log.Info("API server forwarder", "listen", ln.Addr().String(), "to", to.String())
	return func() { ln.Close(); _ = os.Remove(c.ForwardPortFile()) }, nil
}
