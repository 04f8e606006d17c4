// Package k8slab runs a real Kubernetes cluster on the lab's emulated VNet:
// etcd and the control plane in a namespace attached to the API server's
// delegated subnet behind an internal load balancer VIP (seed 003), and per
// lab VM a containerd, a kubelet and a kube-proxy using the VM's azure-vnet
// plugins, with images built locally.
package k8slab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// PKI is the cluster's certificates, keys and tokens, under one directory.
type PKI struct{ Dir string }

// Files of the PKI directory.
func (p PKI) CACert() string        { return filepath.Join(p.Dir, "ca.crt") }
func (p PKI) CAKey() string         { return filepath.Join(p.Dir, "ca.key") }
func (p PKI) APIServerCert() string { return filepath.Join(p.Dir, "apiserver.crt") }
func (p PKI) APIServerKey() string  { return filepath.Join(p.Dir, "apiserver.key") }
func (p PKI) SAKey() string         { return filepath.Join(p.Dir, "sa.key") }
func (p PKI) SAPub() string         { return filepath.Join(p.Dir, "sa.pub") }
func (p PKI) Tokens() string        { return filepath.Join(p.Dir, "tokens.csv") }

// Identity is who a component is to the API server, authenticated by a
// static bearer token.
type Identity struct {
	User   string
	Groups []string
	Token  string
}

// identities of the cluster's components; kubelets are added per node.
func identities(nodes []string) []Identity {
	ids := []Identity{
		{User: "admin", Groups: []string{"system:masters"}},
		{User: "system:kube-controller-manager"},
		{User: "system:kube-scheduler"},
		{User: "system:kube-proxy"},
		{User: AgentUser},
	}
	for _, n := range nodes {
		ids = append(ids, Identity{User: "system:node:" + n, Groups: []string{"system:nodes"}})
	}
	return ids
}

// Create writes a CA, the API server's serving certificate for its SANs,
// the service-account key pair and a token per identity, unless they exist.
func (p PKI) Create(ips []netip.Addr, dnsNames []string, nodes []string) (map[string]Identity, error) {
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return nil, err
	}
	if _, err := os.Stat(p.Tokens()); err != nil {
		if err := p.generate(ips, dnsNames, nodes); err != nil {
			return nil, err
		}
	}
	return p.ReadTokens()
}

func (p PKI) generate(ips []netip.Addr, dnsNames []string, nodes []string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour)
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "vnetcni-lab-ca"},
		NotBefore:             now,
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srv := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now,
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames,
	}
	for _, ip := range ips {
		srv.IPAddresses = append(srv.IPAddresses, net.IP(ip.AsSlice()))
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create API server certificate: %w", err)
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	var tokens strings.Builder
	for _, id := range identities(nodes) {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		fmt.Fprintf(&tokens, "%s,%s,%s", hex.EncodeToString(b), id.User, id.User)
		if len(id.Groups) > 0 {
			fmt.Fprintf(&tokens, ",\"%s\"", strings.Join(id.Groups, ","))
		}
		tokens.WriteString("\n")
	}
	for _, f := range []struct {
		path, typ string
		der       []byte
		key       *ecdsa.PrivateKey
	}{
		{p.CACert(), "CERTIFICATE", caDER, nil},
		{p.CAKey(), "", nil, caKey},
		{p.APIServerCert(), "CERTIFICATE", srvDER, nil},
		{p.APIServerKey(), "", nil, srvKey},
		{p.SAKey(), "", nil, saKey},
		{p.SAPub(), "PUBLIC KEY", saPub, nil},
	} {
		if f.key != nil {
			der, err := x509.MarshalECPrivateKey(f.key)
			if err != nil {
				return err
			}
			f.typ, f.der = "EC PRIVATE KEY", der
		}
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return err
		}
	}
	// The tokens file is written last: its presence means the PKI is whole.
	return os.WriteFile(p.Tokens(), []byte(tokens.String()), 0o600)
}

// ReadTokens returns the identities by user name.
func (p PKI) ReadTokens() (map[string]Identity, error) {
	b, err := os.ReadFile(p.Tokens())
	if err != nil {
		return nil, err
	}
	out := map[string]Identity{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ",", 4)
		if len(f) < 3 {
			continue
		}
		id := Identity{Token: f[0], User: f[1]}
		if len(f) == 4 {
			id.Groups = strings.Split(strings.Trim(f[3], "\""), ",")
		}
		out[id.User] = id
	}
	return out, nil
}

// Kubeconfig writes a kubeconfig for an identity and a server URL.
func (p PKI) Kubeconfig(path, server string, id Identity) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: lab
  context:
    cluster: lab
    user: %s
current-context: lab
`, server, p.CACert(), id.User, id.Token, id.User)
	return os.WriteFile(path, []byte(cfg), 0o600)
}
