// Package cri is a small client of the Kubernetes Container Runtime
// Interface (runtime.v1 over gRPC on a unix socket): enough of kubelet's
// side to create, inspect and remove pod sandboxes, which is where a CRI
// runtime calls the CNI plugins. crictl does the same for people; this is
// for tests and for vnetctl.
package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Client talks to one runtime's CRI socket.
type Client struct {
	conn    *grpc.ClientConn
	runtime runtimeapi.RuntimeServiceClient
	images  runtimeapi.ImageServiceClient
}

// Dial connects to a CRI runtime listening on a unix socket. The
// connection is made lazily; Version checks that the runtime answers.
func Dial(socket string) (*Client, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial CRI socket %s: %w", socket, err)
	}
	return &Client{conn: conn, runtime: runtimeapi.NewRuntimeServiceClient(conn), images: runtimeapi.NewImageServiceClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Version returns the runtime's name and version, e.g. "containerd 1.6.20".
func (c *Client) Version(ctx context.Context) (string, error) {
	v, err := c.runtime.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return "", fmt.Errorf("CRI version: %w", err)
	}
	return v.RuntimeName + " " + v.RuntimeVersion, nil
}

// WaitReady polls Status until the runtime reports itself and its network
// ready (the CNI configuration loaded), or ctx ends.
func (c *Client) WaitReady(ctx context.Context) error {
	var last error
	for {
		st, err := c.runtime.Status(ctx, &runtimeapi.StatusRequest{})
		if err == nil {
			last = nil
			for _, cond := range st.GetStatus().GetConditions() {
				if !cond.Status {
					last = fmt.Errorf("%s: %s %s", cond.Type, cond.Reason, cond.Message)
				}
			}
			if last == nil {
				return nil
			}
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the CRI runtime to be ready: %w (last: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// HasImage reports whether the runtime has an image, by reference.
func (c *Client) HasImage(ctx context.Context, ref string) (bool, error) {
	r, err := c.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return false, fmt.Errorf("CRI image status %s: %w", ref, err)
	}
	return r.GetImage() != nil, nil
}

// Sandbox describes a pod sandbox to create, as kubelet would.
type Sandbox struct {
	Name      string // pod name (K8S_POD_NAME)
	Namespace string // Kubernetes namespace (K8S_POD_NAMESPACE)
	UID       string // pod UID (K8S_POD_UID)
	Attempt   uint32
	// CgroupParent is the cgroupfs parent of the sandbox's cgroup, e.g.
	// /kubepods/pod<uid>.
	CgroupParent string
	Labels       map[string]string
	Ports        []Port
}

// Port is a hostPort mapping, passed to the CNI portmap plugin.
type Port struct {
	Protocol      string // tcp or udp
	ContainerPort int32
	HostPort      int32
	HostIP        string
}

func (s Sandbox) config() *runtimeapi.PodSandboxConfig {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: s.Name, Namespace: s.Namespace, Uid: s.UID, Attempt: s.Attempt},
		Hostname: s.Name,
		Labels:   s.Labels,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: s.CgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
			},
		},
	}
	for _, p := range s.Ports {
		proto := runtimeapi.Protocol_TCP
		if strings.EqualFold(p.Protocol, "udp") {
			proto = runtimeapi.Protocol_UDP
		}
		cfg.PortMappings = append(cfg.PortMappings, &runtimeapi.PortMapping{Protocol: proto, ContainerPort: p.ContainerPort, HostPort: p.HostPort, HostIp: p.HostIP})
	}
	return cfg
}

// RunPodSandbox creates and starts a sandbox: the runtime makes its network
// namespace and runs the CNI ADD. It returns the sandbox ID.
func (c *Client) RunPodSandbox(ctx context.Context, s Sandbox) (string, error) {
	r, err := c.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: s.config()})
	if err != nil {
		return "", fmt.Errorf("run pod sandbox %s/%s: %w", s.Namespace, s.Name, err)
	}
	return r.PodSandboxId, nil
}

// StopPodSandbox stops a sandbox; the runtime runs the CNI DEL. Stopping
// a sandbox that is gone is not an error.
func (c *Client) StopPodSandbox(ctx context.Context, id string) error {
	if _, err := c.runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil && !IsNotFound(err) {
		return fmt.Errorf("stop pod sandbox %s: %w", id, err)
	}
	return nil
}

// RemovePodSandbox removes a stopped sandbox; a missing one is not an error.
func (c *Client) RemovePodSandbox(ctx context.Context, id string) error {
	if _, err := c.runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil && !IsNotFound(err) {
		return fmt.Errorf("remove pod sandbox %s: %w", id, err)
	}
	return nil
}

// IsNotFound reports whether a CRI call failed because the object does not
// exist.
func IsNotFound(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) && se.GRPCStatus().Code() == codes.NotFound {
		return true
	}
	// containerd 1.6 answers some lookups with Unknown and this text.
	return err != nil && strings.Contains(err.Error(), "not found")
}

// Status is what the runtime reports about a sandbox.
type Status struct {
	ID        string
	Name      string
	Namespace string
	Ready     bool
	IP        netip.Addr
	// NetNS is the path of the sandbox's network namespace, from the
	// runtime's verbose info; empty when the runtime does not say.
	NetNS string
	// PID is the sandbox process, from the verbose info; 0 if unknown.
	PID int
}

// PodSandboxStatus inspects a sandbox.
func (c *Client) PodSandboxStatus(ctx context.Context, id string) (Status, error) {
	r, err := c.runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		return Status{}, fmt.Errorf("pod sandbox status %s: %w", id, err)
	}
	st := r.GetStatus()
	s := Status{ID: st.GetId(), Name: st.GetMetadata().GetName(), Namespace: st.GetMetadata().GetNamespace(),
		Ready: st.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY}
	if ip := st.GetNetwork().GetIp(); ip != "" {
		if s.IP, err = netip.ParseAddr(ip); err != nil {
			return s, fmt.Errorf("pod sandbox status %s: IP %q: %w", id, ip, err)
		}
	}
	s.NetNS, s.PID = parseInfo(r.GetInfo()["info"])
	return s, nil
}

// parseInfo reads the network namespace path and the sandbox PID from the
// verbose info containerd returns (its runtime spec and pid).
func parseInfo(info string) (netns string, pid int) {
	if info == "" {
		return "", 0
	}
	var v struct {
		PID         int `json:"pid"`
		RuntimeSpec struct {
			Linux struct {
				Namespaces []struct {
					Type string `json:"type"`
					Path string `json:"path"`
				} `json:"namespaces"`
			} `json:"linux"`
		} `json:"runtimeSpec"`
	}
	if json.Unmarshal([]byte(info), &v) != nil {
		return "", 0
	}
	for _, ns := range v.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			netns = ns.Path
		}
	}
	if netns == "" && v.PID > 0 {
		netns = fmt.Sprintf("/proc/%d/ns/net", v.PID)
	}
	return netns, v.PID
}

// ListPodSandboxes returns the IDs of every sandbox the runtime knows.
func (c *Client) ListPodSandboxes(ctx context.Context) ([]string, error) {
	r, err := c.runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil, fmt.Errorf("list pod sandboxes: %w", err)
	}
	var ids []string
	for _, s := range r.GetItems() {
		ids = append(ids, s.GetId())
	}
	return ids, nil
}
