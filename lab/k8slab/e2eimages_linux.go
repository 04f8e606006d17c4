package k8slab

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/vnetcni/vnetcni/lab/ociimage"
	"github.com/vnetcni/vnetcni/lab/runtimes"
)

// E2ESources are what the Kubernetes e2e suite's images are built from in
// the lab: no registry is reachable, so each image is made locally under its
// exact upstream name and imported into every node, where the suite's pods
// find it (their pull policy is IfNotPresent).
type E2ESources struct {
	// RootFS is an uncompressed layer tarball of a Debian root filesystem
	// with the tools the suite execs in its pods (scripts/e2e-rootfs.sh):
	// sh, curl, nc, dig, ip, nginx, a static busybox.
	RootFS string
	// Agnhost is the agnhost binary of the suite's Kubernetes version.
	Agnhost string
	// Pause is the lab's pause binary.
	Pause string
}

// E2EImageRefs picks, from `e2e.test --list-images`, the images this lab
// builds: registry.k8s.io's agnhost, busybox, nginx, glibc-dns-testing and
// pause, at the versions the suite names. Others (volume drivers, private
// registries) are left out; the suites run here do not use them.
func E2EImageRefs(list string) []string {
	var refs []string
	for _, ref := range strings.Fields(list) {
		if !strings.HasPrefix(ref, "registry.k8s.io/") {
			continue
		}
		if _, ok := e2eImageKind(ref); ok {
			refs = append(refs, ref)
		}
	}
	return refs
}

// e2eImageKind is an image's repository base name, when the lab builds it.
func e2eImageKind(ref string) (string, bool) {
	repo := ref[:strings.LastIndexByte(ref, ':')]
	switch base := path.Base(repo); base {
	case "agnhost", "busybox", "nginx", "glibc-dns-testing", "pause":
		return base, true
	}
	return "", false
}

const e2ePath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// WriteE2EImages writes one image tarball per ref into dir and returns
// their paths.
func WriteE2EImages(dir string, refs []string, src E2ESources) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rootfs, err := os.ReadFile(src.RootFS)
	if err != nil {
		return nil, fmt.Errorf("e2e images: %w", err)
	}
	agnhost, err := os.ReadFile(src.Agnhost)
	if err != nil {
		return nil, fmt.Errorf("e2e images: %w", err)
	}
	pause, err := os.ReadFile(src.Pause)
	if err != nil {
		return nil, fmt.Errorf("e2e images: %w", err)
	}
	busybox, err := busyboxFiles(rootfs)
	if err != nil {
		return nil, err
	}
	cert, key, err := porterTLS()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ref := range refs {
		kind, ok := e2eImageKind(ref)
		if !ok {
			return out, fmt.Errorf("e2e image %s: not one the lab builds", ref)
		}
		img := ociimage.Image{Name: ref, Env: []string{e2ePath}}
		switch kind {
		case "agnhost":
			// As upstream: /agnhost, a second name for entrypoint tests,
			// the tools of its Alpine base from the Debian one.
			img.Base, img.Entrypoint, img.Cmd = rootfs, []string{"/agnhost"}, []string{"pause"}
			img.Files = []ociimage.File{{Path: "agnhost", Mode: 0o755, Data: agnhost}, {Path: "agnhost-2", Link: "agnhost"},
				{Path: "uploads/.keep", Mode: 0o644},
				// porter's default CERT_FILE and KEY_FILE, relative to its
				// working directory /: the proxy spec's TLS ports need them.
				{Path: "localhost.crt", Mode: 0o644, Data: cert}, {Path: "localhost.key", Mode: 0o600, Data: key}}
		case "busybox":
			img.Cmd, img.Files = []string{"sh"}, busybox
		case "nginx":
			img.Base, img.Cmd = rootfs, []string{"nginx", "-g", "daemon off;"}
		case "glibc-dns-testing":
			img.Base, img.Cmd = rootfs, []string{"/bin/sh"}
		case "pause":
			img.Entrypoint, img.Files = []string{"/pause"}, []ociimage.File{{Path: "pause", Mode: 0o755, Data: pause}}
		}
		p := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
		if err := writeImage(p, img); err != nil {
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}

func writeImage(p string, img ociimage.Image) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	_, err = img.Write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("image %s: %w", img.Name, err)
	}
	return nil
}

// busyboxFiles is the busybox image: the rootfs's static busybox, a link
// per applet (as `busybox --install` makes them), the files a container
// expects in /etc, and /tmp.
func busyboxFiles(rootfs []byte) ([]ociimage.File, error) {
	var bin []byte
	tr := tar.NewReader(bytes.NewReader(rootfs))
	for bin == nil {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("e2e images: the rootfs has no static busybox (usr/bin/busybox)")
		}
		if err != nil {
			return nil, fmt.Errorf("e2e images: read rootfs: %w", err)
		}
		if n := strings.TrimPrefix(h.Name, "./"); (n == "usr/bin/busybox" || n == "bin/busybox") && h.Typeflag == tar.TypeReg {
			if bin, err = io.ReadAll(tr); err != nil {
				return nil, err
			}
		}
	}
	tmp, err := os.CreateTemp("", "busybox-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(bin)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o755)
	}
	if err != nil {
		return nil, err
	}
	list, err := exec.Command(tmp.Name(), "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("e2e images: busybox --list-full: %w", err)
	}
	files := []ociimage.File{
		{Path: "bin/busybox", Mode: 0o755, Data: bin},
		{Path: "etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n")},
		{Path: "etc/group", Data: []byte("root:x:0:\nnobody:x:65534:\n")},
		{Path: "tmp/.keep"},
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "bin/busybox" {
			continue
		}
		files = append(files, ociimage.File{Path: applet, Link: "/bin/busybox"})
	}
	return files, nil
}

// ImportImages imports image tarballs into every node's containerd, for
// the CRI (the namespace kubelet's pods are in).
// Equivalent to: ctr -a NODE/containerd.sock -n k8s.io images import TAR.
func (c *Cluster) ImportImages(ctx context.Context, tars []string) error {
	var errs []error
	for _, n := range c.Nodes {
		cdir := filepath.Join(c.nodeDir(n.Name), "containerd")
		for _, t := range tars {
			cmd := exec.CommandContext(ctx, "ctr", "--address", filepath.Join(cdir, "containerd.sock"), "--namespace", runtimes.Namespace,
				"images", "import", "--snapshotter", runtimes.Snapshotter(cdir), t)
			if out, err := cmd.CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("import %s on %s: %v: %s", filepath.Base(t), n.Name, err, bytes.TrimSpace(out)))
			}
		}
	}
	return errors.Join(errs...)
}

// porterTLS is the pair upstream's agnhost image carries for `porter`'s TLS
// ports: a self-signed CA certificate for 127.0.0.1, ::1 and example.com,
// valid from 1970 for a century (as upstream's, made with Go's
// generate_cert). Generated per build; nothing checks its identity.
func porterTLS() (certPEM, keyPEM []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("porter TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("porter TLS serial: %w", err)
	}
	start := time.Unix(0, 0).UTC()
	tmpl := x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Acme Co"}},
		NotBefore:             start,
		NotAfter:              start.Add(1000000 * time.Hour),
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"example.com"},
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("porter TLS certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("porter TLS key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}
