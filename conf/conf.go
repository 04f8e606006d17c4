// Package conf holds the network configuration the package ships: the seed
// documents' sample conflist, byte for byte.
package conf

import _ "embed"

// Conflist is 10-azure.conflist, installed as /etc/cni/net.d/10-azure.conflist.
//
//go:embed 10-azure.conflist
var Conflist []byte

// FileName is the conflist's name in the CNI configuration directory.
const FileName = "10-azure.conflist"
