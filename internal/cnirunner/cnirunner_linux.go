// Package cnirunner drives CNI plugins the way a container runtime does,
// through libcni, but from inside a chosen network namespace: the lab's VMs
// are namespaces, and a plugin's "host" is the namespace it runs in.
package cnirunner

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
)

// Runner runs a node's CNI plugins in the node's network namespace with the
// node's own directories and environment.
type Runner struct {
	NetNS    string   // path of the node's network namespace
	BinDirs  []string // CNI_PATH
	CacheDir string   // libcni's result cache
	Env      []string // extra KEY=VALUE for every plugin, e.g. the state dir
	Stderr   io.Writer
}

// CNI returns a libcni client whose plugins run in the node's namespace.
func (r *Runner) CNI() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(r.BinDirs, r.CacheDir, &nsExec{r: r})
}

type nsExec struct{ r *Runner }

// ExecPlugin forks the plugin from a thread inside the node's namespace, so
// the child starts there.
func (e *nsExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	var out []byte
	var err error
	env := append(append([]string(nil), environ...), e.r.Env...)
	nerr := ns.WithNetNSPath(e.r.NetNS, func(ns.NetNS) error {
		out, err = (&invoke.RawExec{Stderr: e.r.Stderr}).ExecPlugin(ctx, path, stdin, env)
		return nil
	})
	if nerr != nil {
		return nil, fmt.Errorf("enter node netns %s: %w", e.r.NetNS, nerr)
	}
	return out, err
}

func (e *nsExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (e *nsExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

// LoadConfList reads a conflist file.
func LoadConfList(path string) (*libcni.NetworkConfigList, error) {
	return libcni.ConfListFromFile(path)
}

// ConfListFromBytes parses a conflist.
func ConfListFromBytes(b []byte) (*libcni.NetworkConfigList, error) {
	return libcni.ConfListFromBytes(b)
}

// Pod is one pod's runtime parameters.
type Pod struct {
	ContainerID  string
	NetNS        string // path
	IfName       string
	Namespace    string // Kubernetes namespace (K8S_POD_NAMESPACE)
	Name         string // pod name (K8S_POD_NAME)
	PortMappings []PortMapping
}

// PortMapping is the portMappings capability, as kubelet passes hostPort.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// RuntimeConf builds libcni's runtime configuration for a pod, as a
// Kubernetes runtime does (K8S_POD_* args, IgnoreUnknown).
func (p Pod) RuntimeConf() *libcni.RuntimeConf {
	ifName := p.IfName
	if ifName == "" {
		ifName = "eth0"
	}
	rt := &libcni.RuntimeConf{ContainerID: p.ContainerID, NetNS: p.NetNS, IfName: ifName}
	rt.Args = [][2]string{{"IgnoreUnknown", "1"}}
	if p.Namespace != "" {
		rt.Args = append(rt.Args, [2]string{"K8S_POD_NAMESPACE", p.Namespace})
	}
	if p.Name != "" {
		rt.Args = append(rt.Args, [2]string{"K8S_POD_NAME", p.Name}, [2]string{"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID})
	}
	if len(p.PortMappings) > 0 {
		rt.CapabilityArgs = map[string]interface{}{"portMappings": p.PortMappings}
	}
	return rt
}

// Add attaches a pod.
func (r *Runner) Add(ctx context.Context, list *libcni.NetworkConfigList, p Pod) (types.Result, error) {
	return r.CNI().AddNetworkList(ctx, list, p.RuntimeConf())
}

// Del detaches a pod.
func (r *Runner) Del(ctx context.Context, list *libcni.NetworkConfigList, p Pod) error {
	return r.CNI().DelNetworkList(ctx, list, p.RuntimeConf())
}

// Check checks a pod's attachment against the cached result.
func (r *Runner) Check(ctx context.Context, list *libcni.NetworkConfigList, p Pod) error {
	return r.CNI().CheckNetworkList(ctx, list, p.RuntimeConf())
}

// Status asks the plugins whether they can serve an ADD.
func (r *Runner) Status(ctx context.Context, list *libcni.NetworkConfigList) error {
	return r.CNI().GetStatusNetworkList(ctx, list)
}

// GC removes everything not in valid.
func (r *Runner) GC(ctx context.Context, list *libcni.NetworkConfigList, valid []types.GCAttachment) error {
	return r.CNI().GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid})
}

// MkdirAll creates the runner's cache directory.
func (r *Runner) MkdirAll() error {
	if r.CacheDir == "" {
		return nil
	}
	return os.MkdirAll(filepath.Clean(r.CacheDir), 0o755)
}
