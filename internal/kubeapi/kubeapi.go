// Package kubeapi is a small read-only Kubernetes API client for vnetctl:
// it reads a kubeconfig (or the in-cluster service account) and lists
// objects as JSON. vnetctl uses it instead of client-go, which would more
// than double the node tool's size; the agent, which watches, uses
// client-go.
package kubeapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Client lists objects from one API server.
type Client struct {
	server string
	token  string
	http   *http.Client
}

// kubeconfig is the part of a kubeconfig file the client reads.
type kubeconfig struct {
	CurrentContext string `json:"current-context"`
	Contexts       []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
	Clusters []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server                   string `json:"server"`
			CertificateAuthority     string `json:"certificate-authority"`
			CertificateAuthorityData string `json:"certificate-authority-data"`
			InsecureSkipTLSVerify    bool   `json:"insecure-skip-tls-verify"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			ClientCertificate     string `json:"client-certificate"`
			ClientCertificateData string `json:"client-certificate-data"`
			ClientKey             string `json:"client-key"`
			ClientKeyData         string `json:"client-key-data"`
			Token                 string `json:"token"`
			TokenFile             string `json:"tokenFile"`
		} `json:"user"`
	} `json:"users"`
}

// serviceAccountDir holds a pod's API credentials.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// New returns a client from the kubeconfig at path; with no path, from
// $KUBECONFIG, else in-cluster credentials when running in a pod, else
// ~/.kube/config.
func New(path string) (*Client, error) {
	if path == "" {
		path = os.Getenv("KUBECONFIG")
		if i := strings.IndexByte(path, os.PathListSeparator); i >= 0 {
			path = path[:i]
		}
	}
	if path == "" && os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		return inCluster()
	}
	if path == "" {
		home, _ := os.UserHomeDir()
		path = filepath.Join(home, ".kube", "config")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read kubeconfig: %w", err)
	}
	return fromKubeconfig(b, filepath.Dir(path))
}

func inCluster() (*Client, error) {
	token, err := os.ReadFile(filepath.Join(serviceAccountDir, "token"))
	if err != nil {
		return nil, fmt.Errorf("in-cluster credentials: %w", err)
	}
	ca, err := os.ReadFile(filepath.Join(serviceAccountDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("in-cluster credentials: %w", err)
	}
	tc := &tls.Config{RootCAs: x509.NewCertPool()}
	tc.RootCAs.AppendCertsFromPEM(ca)
	host := os.Getenv("KUBERNETES_SERVICE_HOST")
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return newClient("https://"+host+":"+os.Getenv("KUBERNETES_SERVICE_PORT"), strings.TrimSpace(string(token)), tc), nil
}

func newClient(server, token string, tc *tls.Config) *Client {
	return &Client{server: strings.TrimSuffix(server, "/"), token: token,
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}}}
}

// data returns inline base64 data, or the file's content (relative to the
// kubeconfig's directory).
func data(inline, file, dir string) ([]byte, error) {
	if inline != "" {
		return base64.StdEncoding.DecodeString(inline)
	}
	if file == "" {
		return nil, nil
	}
	if !filepath.IsAbs(file) {
		file = filepath.Join(dir, file)
	}
	return os.ReadFile(file)
}

func fromKubeconfig(b []byte, dir string) (*Client, error) {
	var kc kubeconfig
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return nil, fmt.Errorf("parse kubeconfig: %w", err)
	}
	var clusterName, userName string
	for _, c := range kc.Contexts {
		if c.Name == kc.CurrentContext {
			clusterName, userName = c.Context.Cluster, c.Context.User
		}
	}
	if clusterName == "" {
		return nil, fmt.Errorf("kubeconfig: current-context %q not found", kc.CurrentContext)
	}
	tc := &tls.Config{}
	var server, token string
	for _, c := range kc.Clusters {
		if c.Name != clusterName {
			continue
		}
		server = c.Cluster.Server
		tc.InsecureSkipVerify = c.Cluster.InsecureSkipTLSVerify
		ca, err := data(c.Cluster.CertificateAuthorityData, c.Cluster.CertificateAuthority, dir)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig cluster %s: certificate authority: %w", c.Name, err)
		}
		if ca != nil {
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(ca) {
				return nil, fmt.Errorf("kubeconfig cluster %s: certificate authority: no PEM certificate", c.Name)
			}
		}
	}
	if server == "" {
		return nil, fmt.Errorf("kubeconfig: cluster %q has no server", clusterName)
	}
	for _, u := range kc.Users {
		if u.Name != userName {
			continue
		}
		cert, err := data(u.User.ClientCertificateData, u.User.ClientCertificate, dir)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig user %s: client certificate: %w", u.Name, err)
		}
		key, err := data(u.User.ClientKeyData, u.User.ClientKey, dir)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig user %s: client key: %w", u.Name, err)
		}
		if cert != nil {
			pair, err := tls.X509KeyPair(cert, key)
			if err != nil {
				return nil, fmt.Errorf("kubeconfig user %s: %w", u.Name, err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		token = u.User.Token
		if token == "" && u.User.TokenFile != "" {
			t, err := os.ReadFile(u.User.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("kubeconfig user %s: token file: %w", u.Name, err)
			}
			token = strings.TrimSpace(string(t))
		}
	}
	return newClient(server, token, tc), nil
}

// Get decodes the JSON answer to GET path (e.g. /api/v1/pods) into v.
func (c *Client) Get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.server+path, nil)
	if err != nil {
		return fmt.Errorf("get %s: %w", path, err)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("get %s: %s: %s", path, resp.Status, strings.TrimSpace(string(msg)))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("get %s: decode: %w", path, err)
	}
	return nil
}
