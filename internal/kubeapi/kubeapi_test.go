package kubeapi

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGetWithKubeconfig: the client trusts the kubeconfig's CA, sends its
// token and decodes the answer; errors name the status.
func TestGetWithKubeconfig(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/api/v1/pods" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"items":[{"metadata":{"name":"a"}}]}`))
	}))
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	dir := t.TempDir()
	kc := `apiVersion: v1
kind: Config
current-context: lab
contexts:
- name: other
  context: {cluster: nowhere, user: nobody}
- name: lab
  context: {cluster: lab, user: admin}
clusters:
- name: lab
  cluster:
    server: ` + srv.URL + `
    certificate-authority-data: ` + base64.StdEncoding.EncodeToString(ca) + `
users:
- name: admin
  user: {token: s3cret}
`
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := New(path)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
		} `json:"items"`
	}
	if err := c.Get(context.Background(), "/api/v1/pods", &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Items) != 1 || got.Items[0].Metadata.Name != "a" {
		t.Errorf("Get = %+v, want one pod a", got)
	}
	if err := c.Get(context.Background(), "/api/v1/nothing", &got); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Get of a missing path = %v, want a 404 error", err)
	}
}

func TestKubeconfigErrors(t *testing.T) {
	for _, kc := range []string{
		"current-context: x\n",
		"current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n",
		"current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: https://a, certificate-authority-data: bm90IGEgY2VydA==}\n",
	} {
		if _, err := fromKubeconfig([]byte(kc), "/"); err == nil {
			t.Errorf("fromKubeconfig(%q) succeeded", kc)
		}
	}
}
