// Package examples carries the manifests of examples/ for the programs
// that apply them (the lab's checks), so each exists once, here.
package examples

import _ "embed"

// Shop is the seed's network policy case (network-policy/shop.yaml):
// namespace shop, frontend, backend and database tiers, their policies.
//
//go:embed network-policy/shop.yaml
var Shop []byte
