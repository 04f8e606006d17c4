package azurefake

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tok := Tokens{Key: []byte("k"), TTL: time.Hour, Now: func() time.Time { return now }}
	s, exp := tok.Issue("vm-1", "https://management.azure.com/")
	if exp != now.Add(time.Hour) {
		t.Errorf("expires %v", exp)
	}
	if who, err := tok.Verify(s, "https://management.azure.com"); err != nil || who != "vm-1" {
		t.Errorf("Verify = %q, %v", who, err)
	}
	for _, tc := range []struct {
		name, token, aud string
		tokens           Tokens
		want             string
	}{
		{"other key", s, "https://management.azure.com", Tokens{Key: []byte("other"), Now: tok.Now}, "not issued"},
		{"other audience", s, "https://vault.azure.net", tok, "not https://vault.azure.net"},
		{"expired", s, "https://management.azure.com", Tokens{Key: []byte("k"), Now: func() time.Time { return now.Add(2 * time.Hour) }}, "expired"},
		{"garbage", "nodot", "https://management.azure.com", tok, "not issued"},
	} {
		if _, err := tc.tokens.Verify(tc.token, tc.aud); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}

// IMDS's token document: the Metadata header and resource are required,
// numbers are strings.
func TestIdentity(t *testing.T) {
	h := Identity(Tokens{Key: []byte("k")}, func(*http.Request) (string, bool) { return "vm-1", true })
	get := func(url string, md bool) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, url, nil)
		if md {
			r.Header.Set("Metadata", "true")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := get(IdentityPath+"?api-version=2018-02-01&resource=x", false); w.Code != http.StatusBadRequest {
		t.Errorf("no Metadata header: %d", w.Code)
	}
	if w := get(IdentityPath+"?api-version=2018-02-01", true); w.Code != http.StatusBadRequest {
		t.Errorf("no resource: %d", w.Code)
	}
	w := get(IdentityPath+"?api-version=2018-02-01&resource=https://management.azure.com/", true)
	var doc map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || w.Code != http.StatusOK {
		t.Fatalf("token: %d %v %s", w.Code, err, w.Body)
	}
	if doc["token_type"] != "Bearer" || doc["access_token"] == "" || doc["expires_in"] == "" || doc["resource"] != "https://management.azure.com/" {
		t.Errorf("token document %v", doc)
	}
}
