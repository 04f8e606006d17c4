package k8slab

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// RunControlPlane runs etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler in the calling process's network namespace — the control
// plane's, in the API server's delegated subnet — until ctx ends or one of
// them exits. The API server listens on :443 and advertises the internal
// load balancer's VIP, so the kubernetes Service leads there too.
func RunControlPlane(ctx context.Context, c *Cluster) error {
	p := c.pki()
	ids, err := p.ReadTokens()
	if err != nil {
		return fmt.Errorf("read cluster tokens: %w", err)
	}
	dir := c.path("controlplane")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	local := fmt.Sprintf("https://127.0.0.1:%d", APIServerPort)
	for _, k := range []struct{ file, user string }{
		{"controller-manager.kubeconfig", "system:kube-controller-manager"},
		{"scheduler.kubeconfig", "system:kube-scheduler"},
	} {
		if err := p.Kubeconfig(c.path("controlplane", k.file), local, ids[k.user]); err != nil {
			return err
		}
	}
	log := func(name string) string { return c.path("controlplane", name+".log") }
	var cs children
	defer cs.stop(10 * time.Second)

	etcd, err := cs.start("etcd", log("etcd"), nil, c.bin("etcd"),
		"--name=lab", "--data-dir="+c.path("controlplane", "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=lab=http://127.0.0.1:2380", "--listen-metrics-urls=http://127.0.0.1:2381",
		"--log-level=warn", "--quota-backend-bytes=1073741824")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, "etcd", etcd, 60*time.Second, tcpOK("127.0.0.1:2379")); err != nil {
		return err
	}
	api, err := cs.start("kube-apiserver", log("kube-apiserver"), nil, c.bin("kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0", fmt.Sprintf("--secure-port=%d", APIServerPort),
		"--advertise-address="+c.VIP.String(),
		"--service-cluster-ip-range="+c.ServiceCIDR.String(),
		"--tls-cert-file="+p.APIServerCert(), "--tls-private-key-file="+p.APIServerKey(),
		"--client-ca-file="+p.CACert(),
		"--token-auth-file="+p.Tokens(),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p.SAPub(),
		"--service-account-signing-key-file="+p.SAKey(),
		"--allow-privileged=true",
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false", "--v=1")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, "kube-apiserver", api, 120*time.Second, httpsOK(p.CACert(), local+"/readyz", nil)); err != nil {
		return err
	}
	cm := c.path("controlplane", "controller-manager.kubeconfig")
	if _, err := cs.start("kube-controller-manager", log("kube-controller-manager"), nil, c.bin("kube-controller-manager"),
		"--kubeconfig="+cm, "--authentication-kubeconfig="+cm, "--authorization-kubeconfig="+cm,
		"--bind-address=127.0.0.1",
		"--service-account-private-key-file="+p.SAKey(), "--root-ca-file="+p.CACert(),
		"--use-service-account-credentials=true", "--leader-elect=false",
		"--service-cluster-ip-range="+c.ServiceCIDR.String(), "--v=1"); err != nil {
		return err
	}
	sch := c.path("controlplane", "scheduler.kubeconfig")
	if _, err := cs.start("kube-scheduler", log("kube-scheduler"), nil, c.bin("kube-scheduler"),
		"--kubeconfig="+sch, "--authentication-kubeconfig="+sch, "--authorization-kubeconfig="+sch,
		"--bind-address=127.0.0.1", "--leader-elect=false", "--v=1"); err != nil {
		return err
	}
	fmt.Printf("control plane running: %s\n", strings.Join([]string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}, ", "))
	select {
	case <-ctx.Done():
		return nil
	case ch := <-cs.exited():
		return fmt.Errorf("%s exited: %v (log %s)", ch.name, ch.err, log(ch.name))
	}
}
