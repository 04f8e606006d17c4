// Package azurefake serves the lab's wireserver and IMDS: the documents the
// product's clients (internal/azure/wireserver, internal/azure/imds) read,
// built by those packages' own encoders and answered per VM, identified by
// the request's source address as the real endpoints do.
package azurefake

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/vnetcni/vnetcni/internal/azure/imds"
	"github.com/vnetcni/vnetcni/internal/azure/nic"
	"github.com/vnetcni/vnetcni/internal/azure/wireserver"
)

// WireserverLookup finds the interfaces of the VM a request came from, by the
// request's source address. It returns false for an unknown caller.
type WireserverLookup func(src netip.Addr) ([]nic.Interface, bool)

// ErrUnknownCaller is what a WireserverLookup-backed handler answers to a source
// address that belongs to no VM.
var ErrUnknownCaller = errors.New("caller is not a known VM")

// Wireserver serves the interface document to each VM, identifying the VM by the
// source address of the request as the real wireserver does.
func Wireserver(lookup WireserverLookup) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != wireserver.Path || r.URL.Query().Get("comp") != "nmagent" || r.URL.Query().Get("type") != "getinterfaceinfov1" {
			http.NotFound(w, r)
			return
		}
		src, err := remoteAddr(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ifs, ok := lookup(src)
		if !ok {
			http.Error(w, ErrUnknownCaller.Error(), http.StatusForbidden)
			return
		}
		b, err := wireserver.Marshal(ifs)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		_, _ = w.Write(b)
	})
}

func remoteAddr(r *http.Request) (netip.Addr, error) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("parse caller address %q: %w", r.RemoteAddr, err)
	}
	return ap.Addr().Unmap(), nil
}

// IMDSLookup finds the interfaces of the VM a request came from by its source
// address, and a function naming the public address of a private one.
type IMDSLookup func(src netip.Addr) (ifs []nic.Interface, public func(netip.Addr) string, ok bool)

// IMDS serves /metadata/instance/network (and /metadata/instance, with the
// network document under "network") with IMDS's request rules: the Metadata
// header is required, an api-version is required, and requests carrying
// X-Forwarded-For are refused.
func IMDS(lookup IMDSLookup) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata") != "true" {
			writeErr(w, http.StatusBadRequest, "Bad request. Required metadata header not specified")
			return
		}
		if r.Header.Get("X-Forwarded-For") != "" {
			writeErr(w, http.StatusBadRequest, "Bad request. Forwarded requests are not allowed")
			return
		}
		if r.URL.Query().Get("api-version") == "" {
			writeErr(w, http.StatusBadRequest, "Bad request. api-version was not specified in the request")
			return
		}
		path := strings.TrimRight(r.URL.Path, "/")
		if path != imds.NetworkPath && path != "/metadata/instance" {
			writeErr(w, http.StatusNotFound, "Resource not found")
			return
		}
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			writeErr(w, http.StatusBadRequest, "Bad request. Unparsable caller address")
			return
		}
		src, err := netip.ParseAddr(host)
		if err != nil {
			writeErr(w, http.StatusBadRequest, "Bad request. Unparsable caller address")
			return
		}
		ifs, public, ok := lookup(src.Unmap())
		if !ok {
			writeErr(w, http.StatusForbidden, "Forbidden. Caller is not a known VM")
			return
		}
		var doc any = imds.Build(ifs, public)
		if path == "/metadata/instance" {
			doc = map[string]any{"network": doc}
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(doc)
	})
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
