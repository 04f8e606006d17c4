package ipamcontroller

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	azcloud "github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/vnetcni/vnetcni/internal/buildinfo"
	policyk8s "github.com/vnetcni/vnetcni/internal/policy/k8s"
)

// flagNames lists the command's flags, space-separated and -surrounded.
func flagNames() string {
	fs, _ := flags()
	names := " "
	fs.VisitAll(func(f *flag.Flag) { names += f.Name + " " })
	return names
}

type options struct {
	kubeconfig, subscription, group, subnetID, subnet, nicName, endpoint *string
	insecure, version, logJSON                                           *bool
	workers                                                              *int
	resync                                                               *time.Duration
	batch, maxIPs                                                        *int64
}

func flags() (*flag.FlagSet, options) {
	fs := flag.NewFlagSet("vnet-ipam-controller", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig (default: in-cluster, else $KUBECONFIG)")
	subscription := fs.String("subscription", os.Getenv("AZURE_SUBSCRIPTION_ID"), "Azure subscription ID of the nodes' NICs (default $AZURE_SUBSCRIPTION_ID)")
	group := fs.String("resource-group", "", "resource group of the nodes' NICs")
	subnetID := fs.String("pod-subnet-id", "", "ARM resource ID of the pod subnet")
	subnet := fs.String("pod-subnet", "", "the pod subnet's address prefix, e.g. 10.10.0.0/16")
	nicName := fs.String("nic-name", "%s-nic", "a node's NIC name, with %s for the node's name")
	endpoint := fs.String("arm-endpoint", "https://management.azure.com", "Azure Resource Manager's endpoint")
	insecure := fs.Bool("arm-insecure-http", false, "allow an http:// ARM endpoint (a lab's)")
	workers := fs.Int("workers", 4, "nodes synced at once")
	resync := fs.Duration("resync", 5*time.Minute, "sync every node at least this often")
	batch := fs.Int64("batch-size", DefaultScaler.BatchSize, "addresses a node asks for at a time")
	maxIPs := fs.Int64("max-ips-per-node", DefaultScaler.MaxIPCount, "most pod-subnet addresses one node holds")
	version := fs.Bool("version", false, "print the version and exit")
	logJSON := fs.Bool("log-json", false, "log JSON instead of text")
	return fs, options{kubeconfig, subscription, group, subnetID, subnet, nicName, endpoint, insecure, version, logJSON, workers, resync, batch, maxIPs}
}

// Main is vnet-ipam-controller's command line.
func Main(args []string) int {
	fs, o := flags()
	kubeconfig, subscription, group, subnetID, subnet, nicName, endpoint := o.kubeconfig, o.subscription, o.group, o.subnetID, o.subnet, o.nicName, o.endpoint
	insecure, version, logJSON, workers, resync, batch, maxIPs := o.insecure, o.version, o.logJSON, o.workers, o.resync, o.batch, o.maxIPs
	if err := fs.Parse(args); err != nil {
		return 1
	}
	if *version {
		fmt.Println("vnet-ipam-controller", buildinfo.String())
		return 0
	}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	if *logJSON {
		h = slog.NewJSONHandler(os.Stderr, nil)
	}
	log := slog.New(h)
	fail := func(format string, a ...any) int {
		log.Error(fmt.Sprintf(format, a...))
		return 1
	}
	prefix, err := netip.ParsePrefix(*subnet)
	if err != nil || !prefix.Addr().Is4() {
		return fail("--pod-subnet %q: want an IPv4 prefix", *subnet)
	}
	if *subscription == "" || *group == "" || *subnetID == "" {
		return fail("--subscription, --resource-group and --pod-subnet-id are required")
	}
	if !strings.Contains(*nicName, "%s") {
		return fail("--nic-name %q: want %%s for the node's name", *nicName)
	}
	cfg, err := policyk8s.Config(*kubeconfig)
	if err != nil {
		return fail("%v", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fail("%v", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fail("%v", err)
	}
	clientOpts := azcore.ClientOptions{InsecureAllowCredentialWithHTTP: *insecure}
	if *endpoint != "https://management.azure.com" {
		clientOpts.Cloud = azcloud.Configuration{ActiveDirectoryAuthorityHost: azcloud.AzurePublic.ActiveDirectoryAuthorityHost,
			Services: map[azcloud.ServiceName]azcloud.ServiceConfiguration{azcloud.ResourceManager: {Audience: "https://management.azure.com", Endpoint: *endpoint}}}
	}
	// The node's managed identity (IMDS), or whatever DefaultAzureCredential
	// finds first (environment, workload identity).
	cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: clientOpts})
	if err != nil {
		return fail("azure credential: %v", err)
	}
	nics, err := armnetwork.NewInterfacesClient(*subscription, cred, &arm.ClientOptions{ClientOptions: policy.ClientOptions(clientOpts)})
	if err != nil {
		return fail("%v", err)
	}
	scaler := DefaultScaler
	scaler.BatchSize, scaler.MaxIPCount = *batch, *maxIPs
	c := &Controller{Kube: kube, Dynamic: dyn, NICs: ARM{Client: nics, ResourceGroup: *group},
		NICName:     func(node string) string { return fmt.Sprintf(*nicName, node) },
		PodSubnetID: *subnetID, PodSubnet: prefix.Masked(), Scaler: scaler, Log: log}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := c.Run(ctx, *workers, *resync); err != nil {
		return fail("%v", err)
	}
	return 0
}
