package azurefake

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// IdentityPath is IMDS's managed-identity token endpoint.
const IdentityPath = "/metadata/identity/oauth2/token"

// Tokens issues and checks the lab's managed-identity access tokens: a
// VM's identity (its system-assigned managed identity) for one resource
// (audience), for a while, signed with the lab's key. They are opaque to
// clients, as Azure's are to everyone but Azure.
type Tokens struct {
	Key []byte
	TTL time.Duration    // default 24 h, as IMDS's tokens
	Now func() time.Time // default time.Now
}

type claims struct {
	Sub string `json:"sub"`
	Aud string `json:"aud"`
	Exp int64  `json:"exp"`
}

func (t Tokens) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// Issue returns a token for principal to call resource, and when it
// expires.
func (t Tokens) Issue(principal, resource string) (string, time.Time) {
	ttl := t.TTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	exp := t.now().Add(ttl).Truncate(time.Second)
	body, _ := json.Marshal(claims{Sub: principal, Aud: strings.TrimRight(resource, "/"), Exp: exp.Unix()})
	payload := base64.RawURLEncoding.EncodeToString(body)
	return payload + "." + t.sign(payload), exp
}

func (t Tokens) sign(payload string) string {
	m := hmac.New(sha256.New, t.Key)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Verify checks a token for audience and returns its principal.
func (t Tokens) Verify(token, audience string) (string, error) {
	payload, sig, ok := strings.Cut(token, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(t.sign(payload))) {
		return "", errors.New("the token was not issued by this lab")
	}
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return "", errors.New("malformed token")
	}
	var c claims
	if err := json.Unmarshal(body, &c); err != nil {
		return "", errors.New("malformed token")
	}
	if c.Aud != strings.TrimRight(audience, "/") {
		return "", fmt.Errorf("the token is for %s, not %s", c.Aud, audience)
	}
	if t.now().Unix() >= c.Exp {
		return "", fmt.Errorf("the token expired at %s", time.Unix(c.Exp, 0).UTC().Format(time.RFC3339))
	}
	return c.Sub, nil
}

// Identity serves IMDS's managed-identity endpoint: GET
// /metadata/identity/oauth2/token?api-version=…&resource=… with
// "Metadata: true", answered with a token for the calling VM's identity
// (found by the request's source address, as principal names it) in IMDS's
// document, whose numbers are strings.
func Identity(tokens Tokens, principal func(r *http.Request) (string, bool)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata") != "true" {
			writeIdentityErr(w, http.StatusBadRequest, "invalid_request", "Required metadata header not specified")
			return
		}
		q := r.URL.Query()
		if q.Get("api-version") == "" {
			writeIdentityErr(w, http.StatusBadRequest, "invalid_request", "Required query variable 'api-version' is missing")
			return
		}
		resource := q.Get("resource")
		if resource == "" {
			writeIdentityErr(w, http.StatusBadRequest, "invalid_request", "Required query variable 'resource' is missing")
			return
		}
		who, ok := principal(r)
		if !ok {
			writeIdentityErr(w, http.StatusBadRequest, "invalid_request", "Identity not found")
			return
		}
		token, exp := tokens.Issue(who, resource)
		now := tokens.now()
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"access_token":   token,
			"client_id":      who,
			"expires_in":     strconv.FormatInt(int64(exp.Sub(now).Seconds()), 10),
			"expires_on":     strconv.FormatInt(exp.Unix(), 10),
			"ext_expires_in": strconv.FormatInt(int64(exp.Sub(now).Seconds()), 10),
			"not_before":     strconv.FormatInt(now.Unix(), 10),
			"resource":       resource,
			"token_type":     "Bearer",
		})
	})
}

func writeIdentityErr(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}
