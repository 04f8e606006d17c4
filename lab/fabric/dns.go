package fabric

import (
	"errors"
	"net/netip"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsTTL is short: secondary addresses come and go during tests.
const dnsTTL = 5

// answerDNS builds the answer to one DNS query from a zone lookup: A
// records for names the zone knows, an empty answer for other types of a
// known name, NXDOMAIN for unknown names, NOTIMP for anything but a
// standard query. It returns an error only for a message that cannot be
// answered at all (not a query, no question).
func answerDNS(query []byte, lookup func(name string) (netip.Addr, bool)) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	if h.Response {
		return nil, errors.New("not a query")
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	rh := dnsmessage.Header{
		ID:               h.ID,
		Response:         true,
		OpCode:           h.OpCode,
		Authoritative:    true,
		RecursionDesired: h.RecursionDesired,
	}
	var addr netip.Addr
	switch {
	case h.OpCode != 0:
		rh.RCode = dnsmessage.RCodeNotImplemented
	case q.Class != dnsmessage.ClassINET:
		rh.RCode = dnsmessage.RCodeRefused
	default:
		var ok bool
		if addr, ok = lookup(q.Name.String()); !ok {
			rh.RCode = dnsmessage.RCodeNameError
		}
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if rh.RCode == dnsmessage.RCodeSuccess && (q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeALL) {
		hdr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: dnsTTL}
		if err := b.AResource(hdr, dnsmessage.AResource{A: addr.As4()}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}
