package runtimes

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnetcni/vnetcni/internal/golden"
)

var testNode = Node{Name: "lab-vm-1", NetNS: "/run/netns/lab-vm-1",
	CNIBinDir: "/run/vnetcni-lab/lab/vms/vm-1/bin", CNIConfDir: "/run/vnetcni-lab/lab/vms/vm-1/net.d",
	Env: []string{"AZURE_VNET_STATE_DIR=/run/vnetcni-lab/lab/vms/vm-1/state", "AZURE_VNET_LOG_FILE=/run/vnetcni-lab/lab/vms/vm-1/azure-vnet.log"}}

func TestConfigs(t *testing.T) {
	dir := "/run/vnetcni-lab/lab/vms/vm-1/containerd"
	golden.Check(t, filepath.Join("testdata", "containerd-cri.toml"), ContainerdConfig(dir, testNode, "overlayfs", true))
	golden.Check(t, filepath.Join("testdata", "containerd-docker.toml"), ContainerdConfig(dir, testNode, "overlayfs", false))
	golden.Check(t, filepath.Join("testdata", "podman-containers.conf"), PodmanConfig("/run/vnetcni-lab/lab/vms/vm-1/podman", testNode, "azure"))
	golden.Check(t, filepath.Join("testdata", "podman-storage.conf"), PodmanStorageConfig("/run/vnetcni-lab/lab/vms/vm-1/podman", "overlay"))
}

func TestNodeValidate(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Node)
		want string
	}{
		{"ok", func(*Node) {}, ""},
		{"no name", func(n *Node) { n.Name = "" }, "node name"},
		{"slash in name", func(n *Node) { n.Name = "a/b" }, "node name"},
		{"relative netns", func(n *Node) { n.NetNS = "lab-vm-1" }, "not an absolute path"},
		{"relative bin dir", func(n *Node) { n.CNIBinDir = "bin" }, "CNI bin directory"},
	}
	for _, c := range cases {
		n := testNode
		c.edit(&n)
		err := n.validate()
		if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/x\134y`: `/x\y`} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
