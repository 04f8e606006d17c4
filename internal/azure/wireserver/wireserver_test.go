package wireserver

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/vnetcni/vnetcni/internal/azure/nic"
	"github.com/vnetcni/vnetcni/internal/azure/nic/nictest"
)

// sampleDoc is the document DESIGN.md quotes, completed.
const sampleDoc = `<?xml version="1.0" encoding="utf-8"?>
<Interfaces>
  <Interface MacAddress="000D3A6E1825" IsPrimary="true">
    <IPSubnet Prefix="10.240.0.0/16">
      <IPAddress Address="10.240.0.4" IsPrimary="true"/>
      <IPAddress Address="10.240.0.5" IsPrimary="false"/>
      <IPAddress Address="10.240.0.6" IsPrimary="false"/>
    </IPSubnet>
  </Interface>
</Interfaces>`

func TestParse(t *testing.T) {
	tests := []nictest.ParseCase{
		{
			Name: "DESIGN.md sample",
			Doc:  sampleDoc,
			Want: []nic.Interface{nictest.Iface(t, "00:0d:3a:6e:18:25", true, "10.240.0.0/16", "10.240.0.4", "10.240.0.5", "10.240.0.6")},
		},
		{
			Name: "two NICs, lower-case MAC, padded attributes, unmasked prefix",
			Doc: `<Interfaces>
				<Interface MacAddress="000d3a6e1825" IsPrimary="true"><IPSubnet Prefix=" 10.0.0.9/24 "><IPAddress Address=" 10.0.0.4 " IsPrimary="true"/></IPSubnet></Interface>
				<Interface MacAddress="000D3A6E1826"><IPSubnet Prefix="10.0.1.0/24"><IPAddress Address="10.0.1.4" IsPrimary="true"/><IPAddress Address="10.0.1.5"/></IPSubnet></Interface>
			</Interfaces>`,
			Want: []nic.Interface{
				nictest.Iface(t, "00:0d:3a:6e:18:25", true, "10.0.0.0/24", "10.0.0.4"),
				nictest.Iface(t, "00:0d:3a:6e:18:26", false, "10.0.1.0/24", "10.0.1.4", "10.0.1.5"),
			},
		},
		{
			Name: "interface without subnets",
			Doc:  `<Interfaces><Interface MacAddress="000D3A6E1825" IsPrimary="true"/></Interfaces>`,
			Want: []nic.Interface{{MAC: nictest.MAC(t, "00:0d:3a:6e:18:25"), IsPrimary: true}},
		},
		{Name: "no interfaces", Doc: `<Interfaces/>`, Want: []nic.Interface{}},
		{Name: "unknown elements ignored", Doc: `<Interfaces><Foo/><Interface MacAddress="000D3A6E1825" Extra="x"/></Interfaces>`,
			Want: []nic.Interface{{MAC: nictest.MAC(t, "00:0d:3a:6e:18:25")}}},
		{Name: "empty", Doc: ``, WantErr: "decode wireserver interface document: EOF"},
		{Name: "not XML", Doc: `{"Interfaces":[]}`, WantErr: "decode wireserver interface document"},
		{Name: "truncated", Doc: sampleDoc[:len(sampleDoc)/2], WantErr: "decode wireserver interface document"},
		{Name: "wrong root", Doc: `<Interface MacAddress="000D3A6E1825"/>`, WantErr: "expected element type <Interfaces>"},
		{Name: "bad MAC", Doc: `<Interfaces><Interface MacAddress="000D3A6E18"/></Interfaces>`, WantErr: `parse MAC "000D3A6E18"`},
		{Name: "missing MAC", Doc: `<Interfaces><Interface IsPrimary="true"/></Interfaces>`, WantErr: `parse MAC ""`},
		{Name: "bad IsPrimary", Doc: `<Interfaces><Interface MacAddress="000D3A6E1825" IsPrimary="yes"/></Interfaces>`, WantErr: "decode wireserver interface document"},
		{Name: "bad prefix", Doc: `<Interfaces><Interface MacAddress="000D3A6E1825"><IPSubnet Prefix="10.0.0.0"/></Interface></Interfaces>`, WantErr: `subnet "10.0.0.0"`},
		{Name: "bad address", Doc: `<Interfaces><Interface MacAddress="000D3A6E1825"><IPSubnet Prefix="10.0.0.0/24"><IPAddress Address="10.0.0.256"/></IPSubnet></Interface></Interfaces>`, WantErr: `address "10.0.0.256"`},
		{Name: "address outside subnet", Doc: `<Interfaces><Interface MacAddress="000D3A6E1825"><IPSubnet Prefix="10.0.0.0/24"><IPAddress Address="10.0.1.4"/></IPSubnet></Interface></Interfaces>`, WantErr: "address 10.0.1.4 outside subnet 10.0.0.0/24"},
		{Name: "duplicate address across NICs", Doc: `<Interfaces>
			<Interface MacAddress="000D3A6E1825"><IPSubnet Prefix="10.0.0.0/24"><IPAddress Address="10.0.0.4"/></IPSubnet></Interface>
			<Interface MacAddress="000D3A6E1826"><IPSubnet Prefix="10.0.0.0/24"><IPAddress Address="10.0.0.4"/></IPSubnet></Interface>
		</Interfaces>`, WantErr: "address 10.0.0.4 listed twice"},
	}
	nictest.RunParse(t, "Parse", Parse, tests)
}

func TestMarshalRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   []nic.Interface
	}{
		{name: "one NIC", in: []nic.Interface{nictest.Iface(t, "00:0d:3a:6e:18:25", true, "10.240.0.0/16", "10.240.0.4", "10.240.0.5")}},
		{name: "two NICs", in: []nic.Interface{
			nictest.Iface(t, "00:0d:3a:6e:18:25", true, "10.0.0.0/24", "10.0.0.4", "10.0.0.5", "10.0.0.6"),
			nictest.Iface(t, "00:0d:3a:6e:18:26", false, "10.0.1.0/24", "10.0.1.4"),
		}},
		{name: "two subnets on one NIC, secondary before primary", in: []nic.Interface{{
			MAC: nictest.MAC(t, "00:0d:3a:6e:18:25"), IsPrimary: true,
			Subnets: []nic.Subnet{
				{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Addresses: []nic.Address{{IP: netip.MustParseAddr("10.0.0.7")}, {IP: netip.MustParseAddr("10.0.0.4"), IsPrimary: true}}},
				{Prefix: netip.MustParsePrefix("fd00::/64"), Addresses: []nic.Address{{IP: netip.MustParseAddr("fd00::4")}}},
			},
		}}},
		{name: "NIC without subnets", in: []nic.Interface{{MAC: nictest.MAC(t, "00:0d:3a:6e:18:25")}}},
		{name: "subnet without addresses", in: []nic.Interface{{MAC: nictest.MAC(t, "00:0d:3a:6e:18:25"), Subnets: []nic.Subnet{{Prefix: netip.MustParsePrefix("10.0.0.0/24")}}}}},
		{name: "no NICs", in: []nic.Interface{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Marshal(tt.in)
			if err != nil {
				t.Fatalf("Marshal(%+v): %v", tt.in, err)
			}
			if !bytes.HasPrefix(b, []byte(xml.Header)) {
				t.Errorf("Marshal(%+v) = %q, want it to start with the XML header", tt.in, b)
			}
			for _, i := range tt.in {
				if want := `MacAddress="` + nic.FormatAzureMAC(i.MAC) + `"`; !bytes.Contains(b, []byte(want)) {
					t.Errorf("Marshal(%+v) = %s, want it to contain %s", tt.in, b, want)
				}
			}
			got, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse(Marshal(%+v)): %v\ndocument: %s", tt.in, err, b)
			}
			if d := cmp.Diff(tt.in, got, nictest.EquateNetip); d != "" {
				t.Errorf("Parse(Marshal(x)) differs from x (-want +got):\n%s\ndocument: %s", d, b)
			}
		})
	}
}

// serve starts a test server and stops it when the test ends.
func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func TestClient(t *testing.T) {
	// The server end of a request that must be given up on by the client:
	// it waits for the client to hang up, bounded so a broken client
	// cannot hang the test.
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	tests := []struct {
		name    string
		handler http.Handler
		timeout time.Duration
		want    []nic.Interface
		wantErr string
	}{
		{
			name: "good document",
			handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != Path || r.URL.RawQuery != Query || r.Method != http.MethodGet {
					http.Error(w, "wrong request "+r.Method+" "+r.URL.String(), http.StatusTeapot)
					return
				}
				_, _ = w.Write([]byte(sampleDoc))
			}),
			want: []nic.Interface{nictest.Iface(t, "00:0d:3a:6e:18:25", true, "10.240.0.0/16", "10.240.0.4", "10.240.0.5", "10.240.0.6")},
		},
		{
			name: "HTTP 500 reports status and first line of the body",
			handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "nmagent is restarting\nsecond line", http.StatusInternalServerError)
			}),
			wantErr: "HTTP 500: nmagent is restarting",
		},
		{
			name: "malformed XML",
			handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte(`<Interfaces><Interface MacAddress="000D3A6E1825">`))
			}),
			wantErr: "decode wireserver interface document",
		},
		{
			name: "answer larger than the limit",
			handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				// A well-formed document padded past the limit: only the size is wrong.
				_, _ = w.Write([]byte("<Interfaces>"))
				_, _ = w.Write(bytes.Repeat([]byte(" "), maxDocument))
				_, _ = w.Write([]byte("</Interfaces>"))
			}),
			wantErr: "answer larger than 4194304 bytes",
		},
		{
			name:    "slow server past the client timeout",
			handler: slow,
			timeout: 100 * time.Millisecond,
			wantErr: "Client.Timeout exceeded",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := serve(t, tt.handler)
			c := &Client{URL: srv.URL + Path + "?" + Query}
			if tt.timeout != 0 {
				c.HTTP = &http.Client{Timeout: tt.timeout}
			}
			start := time.Now()
			got, err := c.Interfaces(context.Background())
			if tt.timeout != 0 {
				if el := time.Since(start); el > tt.timeout+2*time.Second {
					t.Errorf("Interfaces took %v with a %v timeout", el, tt.timeout)
				}
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Interfaces() = %v, %v; want error containing %q", got, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), srv.URL) {
					t.Errorf("Interfaces() error %q does not name the URL %s", err, srv.URL)
				}
				return
			}
			if err != nil {
				t.Fatalf("Interfaces(): %v", err)
			}
			if d := cmp.Diff(tt.want, got, nictest.EquateNetip); d != "" {
				t.Errorf("Interfaces() (-want +got):\n%s", d)
			}
		})
	}
}

func TestClientContextCancelled(t *testing.T) {
	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	t.Cleanup(cancel)
	c := &Client{URL: srv.URL + Path + "?" + Query}
	_, err := c.Interfaces(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Interfaces(ctx with 50ms deadline) error = %v, want one wrapping context.DeadlineExceeded", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(sampleDoc))
	f.Add([]byte(`<Interfaces/>`))
	f.Add([]byte(`<Interfaces><Interface MacAddress="00:0d:3a:6e:18:25" IsPrimary="true"><IPSubnet Prefix="fd00::/64"><IPAddress Address="fd00::4" IsPrimary="true"/></IPSubnet></Interface></Interfaces>`))
	f.Add([]byte(`<Interfaces><Interface MacAddress="000D3A6E1825"><IPSubnet Prefix="10.0.0.0/24"><IPAddress Address="10.0.1.4"/></IPSubnet></Interface></Interfaces>`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, doc []byte) {
		ifs, err := Parse(doc)
		if err != nil {
			return
		}
		if err := nic.Validate(ifs); err != nil {
			t.Fatalf("Parse(%q) accepted interfaces that fail Validate: %v", doc, err)
		}
		b, err := Marshal(ifs)
		if err != nil {
			t.Fatalf("Marshal(Parse(%q)): %v", doc, err)
		}
		again, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(Marshal(Parse(%q))): %v\nmarshalled: %s", doc, err, b)
		}
		if d := cmp.Diff(ifs, again, nictest.EquateNetip, cmpopts.EquateEmpty()); d != "" {
			t.Fatalf("round trip of %q changed the interfaces (-first +second):\n%s", doc, d)
		}
	})
}
