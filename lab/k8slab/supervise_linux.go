package k8slab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// children are the processes a supervisor started, in start order.
type children struct {
	procs []*child
}

type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// start runs a program with its output appended to logPath. The child gets
// its own process group so a signal to the supervisor's group does not
// reach it before the supervisor decides.
func (cs *children) start(name, logPath string, env []string, bin string, args ...string) (*child, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	cs.procs = append(cs.procs, c)
	return c, nil
}

// exited returns a channel closed when any child exits.
func (cs *children) exited() <-chan *child {
	out := make(chan *child, len(cs.procs))
	for _, c := range cs.procs {
		go func(c *child) {
			<-c.done
			out <- c
		}(c)
	}
	return out
}

// stop ends the children in reverse start order: SIGTERM, SIGKILL after
// grace.
func (cs *children) stop(grace time.Duration) {
	for i := len(cs.procs) - 1; i >= 0; i-- {
		c := cs.procs[i]
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(grace):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
}

// waitFor polls check until it succeeds, the child exits, or ctx ends.
func waitFor(ctx context.Context, what string, c *child, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if last = check(); last == nil {
			return nil
		}
		if c != nil {
			select {
			case <-c.done:
				return fmt.Errorf("%s exited while waiting for it to be ready: %v", c.name, c.err)
			default:
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %s: %v", what, timeout, last)
}

// httpsOK checks an HTTPS URL answers 200, trusting the cluster's CA.
func httpsOK(caFile, url string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func() error {
	return func() error {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DialContext: dial}
		c := &http.Client{Timeout: 2 * time.Second, Transport: tr}
		defer tr.CloseIdleConnections()
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
		}
		return nil
	}
}

func tcpOK(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

var errStopped = errors.New("stopped")

func httpOK(url string) func() error {
	return func() error {
		c := &http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
		}
		return nil
	}
}
