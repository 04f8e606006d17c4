package ipamcontroller

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// deploy/ipam-controller.yaml defines the resource this package uses and
// runs the controller with flags it has.
func TestDeployManifest(t *testing.T) {
	b, err := os.ReadFile("../../deploy/ipam-controller.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]map[string]any{}
	for _, doc := range bytes.Split(b, []byte("\n---\n")) {
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatalf("manifest: %v", err)
		}
		kinds[m["kind"].(string)] = m
	}
	crd := kinds["CustomResourceDefinition"]
	spec := crd["spec"].(map[string]any)
	names := spec["names"].(map[string]any)
	if crd["metadata"].(map[string]any)["name"] != Resource+"."+Group || spec["group"] != Group || names["kind"] != Kind || names["plural"] != Resource {
		t.Errorf("CRD %v does not define %s", crd["metadata"], GVR)
	}
	if v := spec["versions"].([]any)[0].(map[string]any); v["name"] != Version {
		t.Errorf("CRD version %v, want %s", v["name"], Version)
	}
	dep := kinds["Deployment"]
	if dep["metadata"].(map[string]any)["namespace"] != Namespace {
		t.Errorf("Deployment namespace %v", dep["metadata"])
	}
	c := dep["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	var args []string
	for _, a := range c["command"].([]any)[1:] {
		args = append(args, a.(string))
	}
	// The flags parse (placeholder values aside, Main fails on the prefix).
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.Contains(flagNames(), " "+name+" ") {
			t.Errorf("Deployment passes --%s, which vnet-ipam-controller does not have", name)
		}
	}
}
