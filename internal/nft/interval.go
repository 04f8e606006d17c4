package nft

import (
	"encoding/binary"
	"net/netip"
	"sort"

	"github.com/google/nftables"
)

// PrefixElements turns IPv4 prefixes into the elements of an interval set:
// overlapping and adjacent prefixes are merged, and each range is written as
// its first address followed by an interval-end element holding the first
// address after it (omitted when the range runs to 255.255.255.255).
// Equivalent to: elements = { 10.0.0.0/8, 168.63.129.16 }.
func PrefixElements(prefixes []netip.Prefix) []nftables.SetElement {
	type span struct{ lo, hi uint64 } // hi exclusive
	var spans []span
	for _, p := range prefixes {
		if !p.Addr().Is4() {
			continue
		}
		p = p.Masked()
		b := p.Addr().As4()
		lo := uint64(binary.BigEndian.Uint32(b[:]))
		spans = append(spans, span{lo, lo + 1<<(32-p.Bits())})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].lo < spans[j].lo })
	var merged []span
	for _, s := range spans {
		if n := len(merged); n > 0 && s.lo <= merged[n-1].hi {
			if s.hi > merged[n-1].hi {
				merged[n-1].hi = s.hi
			}
			continue
		}
		merged = append(merged, s)
	}
	var out []nftables.SetElement
	for _, s := range merged {
		out = append(out, nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, uint32(s.lo))})
		if s.hi <= 0xffffffff {
			out = append(out, nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, uint32(s.hi)), IntervalEnd: true})
		}
	}
	return out
}
