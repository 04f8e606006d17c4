package fabric

import (
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

func query(t *testing.T, name string, typ dnsmessage.Type, opcode dnsmessage.OpCode) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 42, RecursionDesired: true, OpCode: opcode})
	_ = b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func TestAnswerDNS(t *testing.T) {
	f := Open(validSpec())
	for _, tc := range []struct {
		name   string
		typ    dnsmessage.Type
		opcode dnsmessage.OpCode
		rcode  dnsmessage.RCode
		want   []netip.Addr
	}{
		{"vm1.internal.cloudapp.net.", dnsmessage.TypeA, 0, dnsmessage.RCodeSuccess, []netip.Addr{netip.MustParseAddr("10.0.0.4")}},
		{"VM-2.Internal.CloudApp.Net.", dnsmessage.TypeA, 0, dnsmessage.RCodeSuccess, []netip.Addr{netip.MustParseAddr("10.0.1.6")}},
		{"internet.test.", dnsmessage.TypeA, 0, dnsmessage.RCodeSuccess, []netip.Addr{InternetHostIP}},
		{"vm1.internal.cloudapp.net.", dnsmessage.TypeAAAA, 0, dnsmessage.RCodeSuccess, nil},
		{"vm9.internal.cloudapp.net.", dnsmessage.TypeA, 0, dnsmessage.RCodeNameError, nil},
		{"internal.cloudapp.net.", dnsmessage.TypeA, 0, dnsmessage.RCodeNameError, nil},
		{"example.com.", dnsmessage.TypeA, 0, dnsmessage.RCodeNameError, nil},
		{"internet.test.", dnsmessage.TypeA, 2, dnsmessage.RCodeNotImplemented, nil},
	} {
		a, err := answerDNS(query(t, tc.name, tc.typ, tc.opcode), f.resolve)
		if err != nil {
			t.Errorf("answer %s %v: %v", tc.name, tc.typ, err)
			continue
		}
		var m dnsmessage.Message
		if err := m.Unpack(a); err != nil {
			t.Fatal(err)
		}
		var got []netip.Addr
		for _, r := range m.Answers {
			if ar, ok := r.Body.(*dnsmessage.AResource); ok {
				got = append(got, netip.AddrFrom4(ar.A))
			}
		}
		if m.ID != 42 || !m.Response || m.RCode != tc.rcode || len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) {
			t.Errorf("answer %s %v: got id %d rcode %v answers %v, want id 42 rcode %v answers %v", tc.name, tc.typ, m.ID, m.RCode, got, tc.rcode, tc.want)
		}
	}
	if _, err := answerDNS([]byte{1, 2, 3}, f.resolve); err == nil {
		t.Error("answer garbage: got no error")
	}
}
