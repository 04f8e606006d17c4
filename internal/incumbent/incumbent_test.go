package incumbent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The shapes Azure's azure-vnet and azure-vnet-ipam write (fields they
// write that are not read here are left in, as on a node).
const networkJSON = `{"Network":{"Version":"v1.4.39","TimeStamp":"2024-01-01T00:00:00Z","ExternalInterfaces":{"eth0":{
 "Name":"eth0","Subnets":["10.0.0.0/24"],"BridgeName":"azure0","Networks":{"azure":{"Id":"azure","Mode":"bridge",
 "Endpoints":{"0123abcd-eth0":{"Id":"0123abcd-eth0","IfName":"eth0","HostIfName":"azv1a2b3c4d5e6",
  "MacAddress":"AgAAAAAF","IPAddresses":[{"IP":"10.0.0.10","Mask":"////AA=="}],"Gateways":["10.0.0.1"],
  "ContainerID":"0123abcdef","PODName":"web","PODNameSpace":"default"}}}}}}}}`

const ipamJSON = `{"IPAM":{"Version":"v1.4.39","TimeStamp":"2024-01-01T00:00:00Z","AddressSpaces":{"local":{"Id":"local","Scope":0,
 "Pools":{"10.0.0.0/24":{"Id":"10.0.0.0/24","IfName":"eth0","Subnet":{"IP":"10.0.0.0","Mask":"////AA=="},"Gateway":"10.0.0.1",
 "Addresses":{"10.0.0.10":{"ID":"0123abcd-eth0","Addr":"10.0.0.10","InUse":true},"10.0.0.11":{"ID":"","Addr":"10.0.0.11","InUse":false},
 "10.0.0.12":{"ID":"other","Addr":"10.0.0.12","InUse":true}},"IsIPv6":false,"Priority":0,"RefCount":1}}}}}}`

func TestParse(t *testing.T) {
	s, err := Parse([]byte(networkJSON), []byte(ipamJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := &State{
		Endpoints: []Endpoint{{Network: "azure", Mode: "bridge", ContainerID: "0123abcdef", IfName: "eth0", HostIfName: "azv1a2b3c4d5e6",
			MAC: []byte{2, 0, 0, 0, 0, 5}, IP: netip.MustParsePrefix("10.0.0.10/24"), PodName: "web", PodNamespace: "default"}},
		InUse: map[netip.Addr]string{netip.MustParseAddr("10.0.0.10"): "0123abcd-eth0", netip.MustParseAddr("10.0.0.12"): "other"},
	}
	if d := cmp.Diff(want, s, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Errorf("Parse (-want +got):\n%s", d)
	}
	if e, err := Parse(nil, nil); err != nil || !e.Empty() {
		t.Errorf("Parse(nil, nil) = %+v, %v; want empty", e, err)
	}
	if _, err := Parse([]byte("{"), nil); err == nil {
		t.Errorf("Parse of a truncated file succeeded")
	}
}
