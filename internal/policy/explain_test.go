package policy

import (
	"testing"
)

func TestExplain(t *testing.T) {
	for _, tc := range []struct {
		from, to, port string
		want           string
	}{
		{"shop/frontend-1", "shop/backend-2", "8080/tcp", `shop/frontend-1 (10.0.0.10) -> shop/backend-2 (10.0.1.11) 8080/tcp: ALLOWED
  egress of shop/frontend-1 (10.0.0.10): allowed, no policy selects the pod for egress
  ingress to shop/backend-2 (10.0.1.11): allowed by shop/backend ingress rule 0 (selected by shop/backend, shop/default-deny)
`},
		{"shop/frontend-1", "shop/database-1", "5432/tcp", `shop/frontend-1 (10.0.0.10) -> shop/database-1 (10.0.0.12) 5432/tcp: DENIED
  egress of shop/frontend-1 (10.0.0.10): allowed, no policy selects the pod for egress
  ingress to shop/database-1 (10.0.0.12): denied, selected by shop/database, shop/default-deny and no rule of theirs matches
`},
		{"10.0.1.50", "shop/backend-1", "9100", `ops/prometheus (10.0.1.50) -> shop/backend-1 (10.0.0.11) 9100/tcp: ALLOWED
  egress of ops/prometheus (10.0.1.50): allowed, no policy selects the pod for egress
  ingress to shop/backend-1 (10.0.0.11): allowed by shop/backend ingress rule 1 (selected by shop/backend, shop/default-deny)
`},
		{"203.0.113.9", "shop/frontend-1", "443/tcp", `203.0.113.9 -> shop/frontend-1 (10.0.0.10) 443/tcp: ALLOWED
  egress of 203.0.113.9: not a pod, not filtered here
  ingress to shop/frontend-1 (10.0.0.10): allowed by shop/frontend ingress rule 0 (selected by shop/default-deny, shop/frontend)
`},
	} {
		m := seedModel()
		from, err := m.ResolveEndpoint(tc.from)
		if err != nil {
			t.Fatal(err)
		}
		to, err := m.ResolveEndpoint(tc.to)
		if err != nil {
			t.Fatal(err)
		}
		proto, port, err := ParseProtoPort(tc.port)
		if err != nil {
			t.Fatal(err)
		}
		if got := Explain(m, from, to, proto, port).String(); got != tc.want {
			t.Errorf("Explain(%s, %s, %s) =\n%s\nwant\n%s", tc.from, tc.to, tc.port, got, tc.want)
		}
	}
	m := seedModel()
	for _, bad := range []string{"shop", "shop/nope", "nothing"} {
		if _, err := m.ResolveEndpoint(bad); err == nil {
			t.Errorf("ResolveEndpoint(%q) succeeded", bad)
		}
	}
}
