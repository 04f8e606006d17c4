package azurefake

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vnetcni/vnetcni/internal/azure/imds"
	"github.com/vnetcni/vnetcni/internal/azure/nic"
	"github.com/vnetcni/vnetcni/internal/azure/nic/nictest"
	"github.com/vnetcni/vnetcni/internal/azure/wireserver"
)

// vms is the lookup of a two-VM lab: each VM is known by its primary address.
func vms(t testing.TB) map[netip.Addr][]nic.Interface {
	t.Helper()
	return map[netip.Addr][]nic.Interface{
		netip.MustParseAddr("10.0.0.4"): {nictest.Iface(t, "00:0d:3a:00:00:04", true, "10.0.0.0/24", "10.0.0.4", "10.0.0.10", "10.0.0.11")},
		netip.MustParseAddr("10.0.0.5"): {
			nictest.Iface(t, "00:0d:3a:00:00:05", true, "10.0.0.0/24", "10.0.0.5", "10.0.0.20"),
			nictest.Iface(t, "00:0d:3a:00:01:05", false, "10.0.1.0/24", "10.0.1.5"),
		},
	}
}

func lookupIn(m map[netip.Addr][]nic.Interface) WireserverLookup {
	return func(src netip.Addr) ([]nic.Interface, bool) {
		ifs, ok := m[src]
		return ifs, ok
	}
}

func TestWireserver(t *testing.T) {
	m := vms(t)
	h := Wireserver(lookupIn(m))
	tests := []struct {
		name       string
		target     string
		remote     string
		wantStatus int
		want       []nic.Interface // for 200
		wantBody   string          // substring, for errors
	}{
		{name: "VM 1", target: wireserver.DefaultURL, remote: "10.0.0.4:41000", wantStatus: 200, want: m[netip.MustParseAddr("10.0.0.4")]},
		{name: "VM 2 gets its own NICs", target: wireserver.DefaultURL, remote: "10.0.0.5:41000", wantStatus: 200, want: m[netip.MustParseAddr("10.0.0.5")]},
		{name: "IPv4-mapped caller", target: wireserver.DefaultURL, remote: "[::ffff:10.0.0.4]:41000", wantStatus: 200, want: m[netip.MustParseAddr("10.0.0.4")]},
		{name: "query in other order", target: "http://168.63.129.16/machine/plugins?type=getinterfaceinfov1&comp=nmagent", remote: "10.0.0.4:1", wantStatus: 200, want: m[netip.MustParseAddr("10.0.0.4")]},
		{name: "unknown caller", target: wireserver.DefaultURL, remote: "10.0.0.99:41000", wantStatus: 403, wantBody: ErrUnknownCaller.Error()},
		{name: "wrong path", target: "http://168.63.129.16/machine/plugin?comp=nmagent&type=getinterfaceinfov1", remote: "10.0.0.4:1", wantStatus: 404},
		{name: "root path", target: "http://168.63.129.16/", remote: "10.0.0.4:1", wantStatus: 404},
		{name: "no query", target: "http://168.63.129.16/machine/plugins", remote: "10.0.0.4:1", wantStatus: 404},
		{name: "wrong comp", target: "http://168.63.129.16/machine/plugins?comp=health&type=getinterfaceinfov1", remote: "10.0.0.4:1", wantStatus: 404},
		{name: "wrong type", target: "http://168.63.129.16/machine/plugins?comp=nmagent&type=getinterfaceinfov2", remote: "10.0.0.4:1", wantStatus: 404},
		{name: "unparsable caller", target: wireserver.DefaultURL, remote: "not-an-address", wantStatus: 400, wantBody: "parse caller address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tt.target, nil)
			req.RemoteAddr = tt.remote
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("GET %s from %s: status %d, want %d; body %q", tt.target, tt.remote, rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.wantStatus != http.StatusOK {
				if !strings.Contains(rec.Body.String(), tt.wantBody) {
					t.Errorf("GET %s from %s: body %q, want it to contain %q", tt.target, tt.remote, rec.Body, tt.wantBody)
				}
				return
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/xml") {
				t.Errorf("GET %s from %s: Content-Type %q, want text/xml", tt.target, tt.remote, ct)
			}
			got, err := wireserver.Parse(rec.Body.Bytes())
			if err != nil {
				t.Fatalf("GET %s from %s: wireserver.Parse(answer): %v\nanswer: %s", tt.target, tt.remote, err, rec.Body)
			}
			if d := cmp.Diff(tt.want, got, nictest.EquateNetip); d != "" {
				t.Errorf("GET %s from %s (-want +got):\n%s", tt.target, tt.remote, d)
			}
		})
	}
}

// TestClientAgainstHandler runs the client against the handler over a real
// socket: the caller is 127.0.0.1.
func TestClientAgainstWireserver(t *testing.T) {
	want := []nic.Interface{nictest.Iface(t, "00:0d:3a:6e:18:25", true, "10.240.0.0/16", "10.240.0.4", "10.240.0.5")}
	var asked []netip.Addr
	srv := httptest.NewServer(Wireserver(func(src netip.Addr) ([]nic.Interface, bool) {
		asked = append(asked, src)
		return want, src == netip.MustParseAddr("127.0.0.1")
	}))
	t.Cleanup(srv.Close)
	c := &wireserver.Client{URL: srv.URL + wireserver.Path + "?" + wireserver.Query}
	got, err := c.Interfaces(context.Background())
	if err != nil {
		t.Fatalf("Interfaces(): %v", err)
	}
	if d := cmp.Diff(want, got, nictest.EquateNetip); d != "" {
		t.Errorf("Interfaces() (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]netip.Addr{netip.MustParseAddr("127.0.0.1")}, asked, nictest.EquateNetip); d != "" {
		t.Errorf("lookup callers (-want +got):\n%s", d)
	}
}

// imdsLab is a two-VM lookup keyed by source address.
func imdsLab(t testing.TB) IMDSLookup {
	t.Helper()
	vms := map[netip.Addr][]nic.Interface{
		netip.MustParseAddr("10.0.0.4"):  {nictest.Iface(t, "00:0d:3a:f8:06:ec", true, "10.0.0.0/24", "10.0.0.4", "10.0.0.10")},
		netip.MustParseAddr("10.0.0.5"):  {nictest.Iface(t, "00:0d:3a:f8:06:ed", true, "10.0.0.0/24", "10.0.0.5")},
		netip.MustParseAddr("127.0.0.1"): {nictest.Iface(t, "00:0d:3a:f8:06:ef", true, "10.0.0.0/24", "10.0.0.7")},
	}
	return func(src netip.Addr) ([]nic.Interface, func(netip.Addr) string, bool) {
		ifs, ok := vms[src]
		return ifs, func(netip.Addr) string { return "" }, ok
	}
}

func TestIMDS(t *testing.T) {
	h := IMDS(imdsLab(t))
	const good = "http://169.254.169.254/metadata/instance/network?api-version=2021-02-01"
	tests := []struct {
		name       string
		target     string
		remote     string
		header     http.Header
		wantStatus int
		wantErr    string          // the "error" member, for non-200 answers
		want       []nic.Interface // parsed answer, for 200
		wantNested bool            // answer nested under "network"
	}{
		{name: "good", target: good, remote: "10.0.0.4:5000", header: http.Header{"Metadata": {"true"}}, wantStatus: 200,
			want: []nic.Interface{nictest.Iface(t, "00:0d:3a:f8:06:ec", true, "10.0.0.0/24", "10.0.0.4", "10.0.0.10")}},
		{name: "other VM", target: good, remote: "10.0.0.5:5000", header: http.Header{"Metadata": {"true"}}, wantStatus: 200,
			want: []nic.Interface{nictest.Iface(t, "00:0d:3a:f8:06:ed", true, "10.0.0.0/24", "10.0.0.5")}},
		{name: "trailing slash", target: "http://169.254.169.254/metadata/instance/network/?api-version=2021-02-01", remote: "10.0.0.4:5000", header: http.Header{"Metadata": {"true"}}, wantStatus: 200,
			want: []nic.Interface{nictest.Iface(t, "00:0d:3a:f8:06:ec", true, "10.0.0.0/24", "10.0.0.4", "10.0.0.10")}},
		{name: "instance document wraps network", target: "http://169.254.169.254/metadata/instance?api-version=2021-02-01", remote: "10.0.0.4:5000", header: http.Header{"Metadata": {"true"}}, wantStatus: 200,
			want: []nic.Interface{nictest.Iface(t, "00:0d:3a:f8:06:ec", true, "10.0.0.0/24", "10.0.0.4", "10.0.0.10")}, wantNested: true},
		{name: "no Metadata header", target: good, remote: "10.0.0.4:5000", wantStatus: 400, wantErr: "Required metadata header not specified"},
		{name: "Metadata: false", target: good, remote: "10.0.0.4:5000", header: http.Header{"Metadata": {"false"}}, wantStatus: 400, wantErr: "Required metadata header not specified"},
		{name: "X-Forwarded-For", target: good, remote: "10.0.0.4:5000", header: http.Header{"Metadata": {"true"}, "X-Forwarded-For": {"10.0.0.9"}}, wantStatus: 400, wantErr: "Forwarded requests are not allowed"},
		{name: "no api-version", target: "http://169.254.169.254/metadata/instance/network", remote: "10.0.0.4:5000", header: http.Header{"Metadata": {"true"}}, wantStatus: 400, wantErr: "api-version was not specified"},
		{name: "empty api-version", target: "http://169.254.169.254/metadata/instance/network?api-version=", remote: "10.0.0.4:5000", header: http.Header{"Metadata": {"true"}}, wantStatus: 400, wantErr: "api-version was not specified"},
		{name: "unknown path", target: "http://169.254.169.254/metadata/instance/compute?api-version=2021-02-01", remote: "10.0.0.4:5000", header: http.Header{"Metadata": {"true"}}, wantStatus: 404, wantErr: "Resource not found"},
		{name: "unknown caller", target: good, remote: "10.0.0.99:5000", header: http.Header{"Metadata": {"true"}}, wantStatus: 403, wantErr: "Caller is not a known VM"},
		{name: "unparsable caller", target: good, remote: "10.0.0.4", header: http.Header{"Metadata": {"true"}}, wantStatus: 400, wantErr: "Unparsable caller address"},
		{name: "IPv4-mapped caller", target: good, remote: "[::ffff:10.0.0.5]:5000", header: http.Header{"Metadata": {"true"}}, wantStatus: 200,
			want: []nic.Interface{nictest.Iface(t, "00:0d:3a:f8:06:ed", true, "10.0.0.0/24", "10.0.0.5")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tt.target, nil)
			req.RemoteAddr = tt.remote
			for k, v := range tt.header {
				req.Header[k] = v
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("GET %s from %s with %v: status %d, want %d; body %s", tt.target, tt.remote, tt.header, rec.Code, tt.wantStatus, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("GET %s: Content-Type %q, want application/json", tt.target, ct)
			}
			if tt.wantStatus != http.StatusOK {
				var e struct{ Error string }
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || !strings.Contains(e.Error, tt.wantErr) {
					t.Errorf("GET %s from %s with %v: body %s (%v), want error containing %q", tt.target, tt.remote, tt.header, rec.Body, err, tt.wantErr)
				}
				return
			}
			doc := rec.Body.Bytes()
			if tt.wantNested {
				var inst struct{ Network json.RawMessage }
				if err := json.Unmarshal(doc, &inst); err != nil || len(inst.Network) == 0 {
					t.Fatalf("GET %s: answer %s (%v), want the network document under \"network\"", tt.target, doc, err)
				}
				doc = inst.Network
			}
			got, err := imds.Parse(doc)
			if err != nil {
				t.Fatalf("GET %s: imds.Parse(answer): %v\nanswer: %s", tt.target, err, doc)
			}
			if d := cmp.Diff(tt.want, got, nictest.EquateNetip); d != "" {
				t.Errorf("GET %s from %s (-want +got):\n%s", tt.target, tt.remote, d)
			}
		})
	}
}

// TestClientAgainstHandler: the client meets the handler's rules.
func TestIMDSClient(t *testing.T) {
	srv := httptest.NewServer(IMDS(imdsLab(t)))
	t.Cleanup(srv.Close)
	got, err := (&imds.Client{BaseURL: srv.URL}).Interfaces(context.Background())
	if err != nil {
		t.Fatalf("Interfaces(): %v", err)
	}
	want := []nic.Interface{nictest.Iface(t, "00:0d:3a:f8:06:ef", true, "10.0.0.0/24", "10.0.0.7")}
	if d := cmp.Diff(want, got, nictest.EquateNetip); d != "" {
		t.Errorf("Interfaces() (-want +got):\n%s", d)
	}
}
