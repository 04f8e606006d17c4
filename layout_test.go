package vnetcni_test

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// module is this repository's Go module path.
const module = "github.com/vnetcni/vnetcni"

// The product is what a node runs: the plugins, the agent, vnetctl and the
// packages under internal/. The lab (lab/...) and the test suites (test/...)
// may import the product; the product never imports them, and links none of
// the lab's heavy dependencies.
var (
	productRoots = []string{module + "/cmd/", module + "/internal/", module + "/conf", module + "/deploy/"}
	labRoots     = []string{module + "/lab/", module + "/test/"}
	// forbidden are third-party modules only the lab needs (CRI's gRPC, the
	// benchmark's charts): a node binary that links them links the lab.
	forbidden = []string{"google.golang.org/grpc", "k8s.io/cri-api", "gonum.org/"}
)

type pkg struct {
	ImportPath string
	Deps       []string
}

func hasPrefix(s string, prefixes []string) bool {
	return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(s, p) || s == strings.TrimSuffix(p, "/") })
}

// violations lists, for each product package, the lab packages and
// forbidden modules among its (non-test) dependencies.
func violations(pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
		if !hasPrefix(p.ImportPath, productRoots) {
			continue
		}
		for _, d := range p.Deps {
			if hasPrefix(d, labRoots) || hasPrefix(d, forbidden) {
				out = append(out, p.ImportPath+" -> "+d)
			}
		}
	}
	return out
}

func TestProductImportsNoLab(t *testing.T) {
	out, err := exec.Command("go", "list", "-e", "-json=ImportPath,Deps", "./...").Output()
	if err != nil {
		t.Fatalf("go list ./...: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	var product int
	for _, p := range pkgs {
		if hasPrefix(p.ImportPath, productRoots) {
			product++
		}
	}
	if product < 10 {
		t.Fatalf("go list found %d product packages in %d; the rule would check nothing", product, len(pkgs))
	}
	for _, v := range violations(pkgs) {
		t.Errorf("product package imports the lab: %s", v)
	}
}

// TestPluginsStayThin: the plugins run once per CNI call and pay for every
// package they link at each start; the agent's metrics and Kubernetes
// clients belong to the agent and vnetctl's status talks to it over its
// socket.
func TestPluginsStayThin(t *testing.T) {
	heavy := []string{"github.com/prometheus/", "k8s.io/client-go", "k8s.io/api/"}
	for _, bin := range []string{"./cmd/azure-vnet", "./cmd/azure-vnet-standalone", "./cmd/azure-vnet-ipam", "./cmd/vnetctl"} {
		out, err := exec.Command("go", "list", "-deps", bin).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", bin, err)
		}
		for _, d := range strings.Fields(string(out)) {
			if hasPrefix(d, heavy) {
				t.Errorf("%s links %s", bin, d)
			}
		}
	}
}

// TestThinPluginLinksLittle: azure-vnet, the thin client, starts for every
// CNI call; the CNI library, netlink, nftables and net/http are the
// standalone plugin's (azure-vnet-standalone) and the agent's.
func TestThinPluginLinksLittle(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./cmd/azure-vnet").Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/azure-vnet: %v", err)
	}
	heavy := []string{"github.com/", "golang.org/x/", "net", "net/http", "regexp"}
	for _, d := range strings.Fields(string(out)) {
		if strings.HasPrefix(d, module+"/") {
			continue
		}
		for _, h := range heavy {
			if d == h || strings.HasPrefix(h, "github.com/") && strings.HasPrefix(d, h) || strings.HasPrefix(h, "golang.org/") && strings.HasPrefix(d, h) {
				t.Errorf("./cmd/azure-vnet links %s", d)
			}
		}
	}
}

// TestViolations: the rule catches a product package that reaches the lab,
// directly or through a dependency, and a forbidden module; lab packages
// may import anything.
func TestViolations(t *testing.T) {
	pkgs := []pkg{
		{ImportPath: module + "/cmd/vnetctl", Deps: []string{module + "/internal/cli", module + "/lab/vnetlab"}},
		{ImportPath: module + "/internal/doctor", Deps: []string{"google.golang.org/grpc/codes"}},
		{ImportPath: module + "/internal/store", Deps: []string{"encoding/json", module + "/internal/nft"}},
		{ImportPath: module + "/internal/labels", Deps: []string{module + "/test/e2e"}},
		{ImportPath: module + "/lab/vnetlab", Deps: []string{module + "/internal/store", "k8s.io/cri-api/pkg/apis"}},
	}
	got := violations(pkgs)
	want := []string{
		module + "/cmd/vnetctl -> " + module + "/lab/vnetlab",
		module + "/internal/doctor -> google.golang.org/grpc/codes",
		module + "/internal/labels -> " + module + "/test/e2e",
	}
	if !slices.Equal(got, want) {
		t.Errorf("violations() = %q, want %q", got, want)
	}
}

// pluginForbidden are what the CNI plugins and vnetctl must never link:
// the policy engine and the Kubernetes API machinery are the agent's and
// vnetctl-policy's. A plugin runs once per CNI call and pays for every
// package at start; vnetctl would double in size (9 to 17 MB).
var pluginForbidden = []string{"k8s.io/", module + "/internal/policy", module + "/internal/kubeapi"}

// TestPluginsLinkNoPolicy: go list -deps of the plugins and vnetctl holds
// none of them.
func TestPluginsLinkNoPolicy(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./cmd/azure-vnet", "./cmd/azure-vnet-standalone", "./cmd/azure-vnet-ipam", "./cmd/vnetctl").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps found %d packages; the rule would check nothing", len(deps))
	}
	for _, d := range deps {
		if hasPrefix(d, pluginForbidden) {
			t.Errorf("a CNI plugin or vnetctl links %s", d)
		}
	}
}
