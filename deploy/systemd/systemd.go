// Package systemd holds the systemd unit the release ships for VMs without
// Kubernetes: vnetd.service, byte for byte, for `vnetctl install`.
package systemd

import _ "embed"

// Unit is vnetd.service, installed as /etc/systemd/system/vnetd.service.
//
//go:embed vnetd.service
var Unit []byte

// UnitName is the unit's file name.
const UnitName = "vnetd.service"

// DefaultExec is the agent's path in Unit's ExecStart; an install into
// another CNI bin directory rewrites it.
const DefaultExec = "/opt/cni/bin/vnetd"
