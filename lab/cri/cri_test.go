package cri

import "testing"

func TestParseInfo(t *testing.T) {
	cases := []struct {
		name, info string
		netns      string
		pid        int
	}{
		{"containerd", `{"pid":42,"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/run/netns/cni-1"}]}}}`, "/run/netns/cni-1", 42},
		{"pid only", `{"pid":7}`, "/proc/7/ns/net", 7},
		{"empty", ``, "", 0},
		{"garbage", `{`, "", 0},
	}
	for _, c := range cases {
		netns, pid := parseInfo(c.info)
		if netns != c.netns || pid != c.pid {
			t.Errorf("%s: parseInfo = %q, %d; want %q, %d", c.name, netns, pid, c.netns, c.pid)
		}
	}
}

func TestSandboxConfig(t *testing.T) {
	cfg := Sandbox{Name: "web", Namespace: "team", UID: "u1", CgroupParent: "/p",
		Ports: []Port{{Protocol: "UDP", ContainerPort: 53, HostPort: 5353}}}.config()
	if m := cfg.GetMetadata(); m.Name != "web" || m.Namespace != "team" || m.Uid != "u1" {
		t.Errorf("metadata %v, want web/team/u1", m)
	}
	if cfg.GetLinux().GetCgroupParent() != "/p" || cfg.GetHostname() != "web" {
		t.Errorf("cgroup parent %q, hostname %q", cfg.GetLinux().GetCgroupParent(), cfg.GetHostname())
	}
	if p := cfg.GetPortMappings(); len(p) != 1 || p[0].Protocol.String() != "UDP" || p[0].HostPort != 5353 {
		t.Errorf("port mappings %v, want one UDP 5353->53", p)
	}
}
