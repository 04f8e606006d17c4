package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
)

// recorder is a libcni invoke.Exec that runs plugins from a thread inside
// a node's network namespace (as cnirunner does) and records each
// process's rusage. One recorder serves one libcni call.
type recorder struct {
	netns string   // path
	env   []string // extra KEY=VALUE
	// timeDir, when set, makes the recorder run each plugin under GNU
	// time and take the peak RSS from it (see rssWrapper).
	timeDir string
	mu      sync.Mutex
	execs   []Exec
}

// gnuTime is GNU time, the small parent the footprint runs use.
const gnuTime = "/usr/bin/time"

func (r *recorder) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	env := append(append([]string(nil), environ...), r.env...)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path)
	var rssFile string
	if r.timeDir != "" {
		// A Go parent starts children with vfork, and the kernel counts the
		// parent's memory, which the child shares until exec, into the
		// child's peak RSS: rusage from this process would report this
		// process's size. GNU time is a small parent that forks a copy of
		// itself; what it reports is the plugin's (the children it waited
		// for included) plus at most time's own megabyte or so.
		f, err := os.CreateTemp(r.timeDir, "rss-")
		if err != nil {
			return nil, err
		}
		f.Close()
		rssFile = f.Name()
		defer os.Remove(rssFile)
		cmd = exec.CommandContext(ctx, gnuTime, "-f", "%M", "-o", rssFile, path)
	}
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	var runErr error
	var wall time.Duration
	// The child starts in the namespace of the thread that forks it.
	nerr := ns.WithNetNSPath(r.netns, func(ns.NetNS) error {
		start := time.Now()
		runErr = cmd.Run()
		wall = time.Since(start)
		return nil
	})
	if nerr != nil {
		return nil, fmt.Errorf("enter netns %s: %w", r.netns, nerr)
	}
	e := Exec{Plugin: filepath.Base(path), Command: envValue(environ, "CNI_COMMAND"), Wall: wall, Stderr: stderr.String()}
	if ps := cmd.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			e.User = time.Duration(ru.Utime.Nano())
			e.Sys = time.Duration(ru.Stime.Nano())
			e.MaxRSSKB = ru.Maxrss // KiB on Linux
			e.MinFlt = ru.Minflt
		}
	}
	if rssFile != "" {
		e.MaxRSSKB = -1
		if b, err := os.ReadFile(rssFile); err == nil {
			// A failed command's line comes first; the figure is last.
			f := strings.Fields(string(b))
			if len(f) > 0 {
				if kb, err := strconv.ParseInt(f[len(f)-1], 10, 64); err == nil {
					e.MaxRSSKB = kb
				}
			}
		}
	}
	r.mu.Lock()
	r.execs = append(r.execs, e)
	r.mu.Unlock()
	if runErr != nil {
		return nil, pluginError(runErr, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// pluginError turns a failed plugin run into the CNI error it printed, or
// a description of how it failed.
func pluginError(err error, stdout, stderr []byte) error {
	var e types.Error
	if len(stdout) > 0 && json.Unmarshal(stdout, &e) == nil && (e.Code != 0 || e.Msg != "") {
		return &e
	}
	return fmt.Errorf("plugin failed: %w; stdout %q; stderr %q", err, stdout, stderr)
}

func (r *recorder) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (r *recorder) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

func (r *recorder) recorded() []Exec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Exec(nil), r.execs...)
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// node is where one plugin configuration runs: a VM's namespace, the
// runtime's CNI directories and the plugin's environment.
type node struct {
	netns    string // path
	binDir   string
	cacheDir string
	env      []string
	list     *libcni.NetworkConfigList
	timeDir  string // see recorder
}

// add runs ADD through libcni and returns the result and the call's cost.
func (n *node) add(ctx context.Context, rt *libcni.RuntimeConf) (types.Result, call) {
	rec := &recorder{netns: n.netns, env: n.env, timeDir: n.timeDir}
	c := libcni.NewCNIConfigWithCacheDir([]string{n.binDir}, n.cacheDir, rec)
	start := time.Now()
	res, err := c.AddNetworkList(ctx, n.list, rt)
	return res, call{Wall: time.Since(start), Execs: rec.recorded(), Err: err}
}

// del runs DEL through libcni.
func (n *node) del(ctx context.Context, rt *libcni.RuntimeConf) call {
	rec := &recorder{netns: n.netns, env: n.env, timeDir: n.timeDir}
	c := libcni.NewCNIConfigWithCacheDir([]string{n.binDir}, n.cacheDir, rec)
	start := time.Now()
	err := c.DelNetworkList(ctx, n.list, rt)
	return call{Wall: time.Since(start), Execs: rec.recorded(), Err: err}
}
