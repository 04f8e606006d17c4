package cloud

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ARM's error codes of the HTTP front.
const (
	CodeAuthentication  = "AuthenticationFailed"
	CodeMissingVersion  = "MissingApiVersionParameter"
	CodeThrottled       = "SubscriptionRequestsThrottled"
	CodeInternal        = "InternalServerError"
	CodeMethod          = "MethodNotAllowed"
	CodeInvalidResource = "InvalidResourceType"
)

// Limits are the front's request rates per caller, as ARM throttles per
// subscription and principal: token buckets of Burst requests refilled at
// the given rates. Past them a request gets 429 with Retry-After. Zero
// rates do not throttle.
type Limits struct {
	ReadsPerSecond  float64
	WritesPerSecond float64
	Burst           int
}

// ArmHandler serves the cloud over HTTP as Azure Resource Manager's REST
// API serves Microsoft.Network: the same paths, bodies, status codes,
// Azure-AsyncOperation headers and error documents, so a real ARM client
// (the Azure SDK for Go's armnetwork) can be pointed at it.
type ArmHandler struct {
	Cloud *Cloud
	// Authenticate checks a bearer token and names its holder; nil lets
	// every request through.
	Authenticate func(token string) (principal string, err error)
	Limits       Limits

	mu      sync.Mutex
	buckets map[string]*bucket
	faults  []int // statuses for the next requests
	now     func() time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// FailNext makes the next n requests fail with status (500, 503, 429…)
// before they reach the cloud: a fault an ARM client must survive.
func (h *ArmHandler) FailNext(n, status int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for range n {
		h.faults = append(h.faults, status)
	}
}

func (h *ArmHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-ms-request-id", strconv.FormatInt(time.Now().UnixNano(), 36))
	principal := "anonymous"
	if h.Authenticate != nil {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		p, err := h.Authenticate(token)
		if !ok || err != nil {
			if err == nil {
				err = errors.New("the request carries no bearer token")
			}
			w.Header().Set("WWW-Authenticate", `Bearer authorization_uri="https://login.microsoftonline.com/lab", error="invalid_token", error_description="`+err.Error()+`"`)
			writeError(w, http.StatusUnauthorized, &Error{Code: CodeAuthentication, Message: err.Error()})
			return
		}
		principal = p
	}
	if status, ok := h.fault(); ok {
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		writeError(w, status, &Error{Code: CodeInternal, Message: "injected fault"})
		return
	}
	write := r.Method == http.MethodPut || r.Method == http.MethodDelete || r.Method == http.MethodPatch || r.Method == http.MethodPost
	if wait, ok := h.admit(principal, write); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		writeError(w, http.StatusTooManyRequests, &Error{Code: CodeThrottled, Message: fmt.Sprintf(
			"number of %s requests for subscription %s and principal %s exceeded the limit; try again after %s", kind(write), Subscription, principal, wait.Round(time.Second))})
		return
	}
	version := r.URL.Query().Get("api-version")
	if version == "" {
		writeError(w, http.StatusBadRequest, &Error{Code: CodeMissingVersion, Message: "the api-version query parameter is required for all requests"})
		return
	}
	rest, ok := h.under(r.URL.Path)
	if !ok {
		writeError(w, http.StatusNotFound, &Error{Code: CodeInvalidResource, Message: "no resource at " + r.URL.Path})
		return
	}
	h.route(w, r, rest, version)
}

func kind(write bool) string {
	if write {
		return "write"
	}
	return "read"
}

// under returns a path's segments below the resource group's
// Microsoft.Network provider (ARM's paths are case-insensitive).
func (h *ArmHandler) under(p string) ([]string, bool) {
	prefix := h.Cloud.prefix + "/"
	if len(p) < len(prefix) || !strings.EqualFold(p[:len(prefix)], prefix) {
		return nil, false
	}
	return strings.Split(strings.Trim(p[len(prefix):], "/"), "/"), true
}

func (h *ArmHandler) route(w http.ResponseWriter, r *http.Request, seg []string, version string) {
	c := h.Cloud
	is := func(i int, name string) bool { return len(seg) > i && strings.EqualFold(seg[i], name) }
	switch {
	case len(seg) == 1 && is(0, "networkInterfaces") && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"value": c.ListNICs()})
	case len(seg) == 2 && is(0, "networkInterfaces"):
		switch r.Method {
		case http.MethodGet:
			n, err := c.GetNIC(seg[1])
			reply(w, http.StatusOK, n, err)
		case http.MethodPut:
			var n NetworkInterface
			if !decode(w, r, &n) {
				return
			}
			n.Name = seg[1]
			out, op, err := c.PutNIC(n, r.Header.Get("If-Match"))
			if err != nil {
				reply(w, 0, nil, err)
				return
			}
			accepted(w, r, http.StatusOK, out, op, version)
		default:
			notAllowed(w, r)
		}
	case len(seg) == 3 && is(0, "networkInterfaces") && is(2, "ipConfigurations") && r.Method == http.MethodGet:
		n, err := c.GetNIC(seg[1])
		reply(w, http.StatusOK, map[string]any{"value": n.Properties.IPConfigurations}, err)
	case len(seg) == 4 && is(0, "networkInterfaces") && is(2, "ipConfigurations") && r.Method == http.MethodGet:
		n, err := c.GetNIC(seg[1])
		if err != nil {
			reply(w, 0, nil, err)
			return
		}
		for _, ipc := range n.Properties.IPConfigurations {
			if strings.EqualFold(ipc.Name, seg[3]) {
				writeJSON(w, http.StatusOK, ipc)
				return
			}
		}
		reply(w, 0, nil, &Error{Code: CodeNotFound, Message: "IP configuration " + seg[3] + " of " + seg[1] + " not found"})
	case len(seg) == 2 && is(0, "routeTables"):
		switch r.Method {
		case http.MethodGet:
			rt, err := c.GetRouteTable(seg[1])
			reply(w, http.StatusOK, rt, err)
		case http.MethodPut:
			var rt RouteTable
			if !decode(w, r, &rt) {
				return
			}
			rt.Name = seg[1]
			_, missing := c.GetRouteTable(rt.Name)
			op, err := c.PutRouteTable(rt)
			if err != nil {
				reply(w, 0, nil, err)
				return
			}
			out, _ := c.GetRouteTable(rt.Name)
			status := http.StatusOK
			if missing != nil {
				status = http.StatusCreated
			}
			accepted(w, r, status, out, op, version)
		case http.MethodDelete:
			if _, err := c.GetRouteTable(seg[1]); err != nil {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			op, err := c.DeleteRouteTable(seg[1])
			if err != nil {
				reply(w, 0, nil, err)
				return
			}
			accepted(w, r, http.StatusAccepted, nil, op, version)
		default:
			notAllowed(w, r)
		}
	case len(seg) == 4 && is(0, "routeTables") && is(2, "routes"):
		h.routeOfTable(w, r, seg[1], seg[3], version)
	case len(seg) == 4 && is(0, "locations") && is(2, "operations") && r.Method == http.MethodGet:
		op, err := c.Operation(c.prefix + "/locations/" + seg[1] + "/operations/" + seg[3])
		if err != nil {
			reply(w, 0, nil, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": op.ID, "name": seg[3], "status": op.Status, "error": op.Error})
	default:
		writeError(w, http.StatusNotFound, &Error{Code: CodeInvalidResource, Message: fmt.Sprintf("%s %s: no such resource type in the lab", r.Method, r.URL.Path)})
	}
}

func (h *ArmHandler) routeOfTable(w http.ResponseWriter, r *http.Request, table, name, version string) {
	c := h.Cloud
	find := func() (Route, error) {
		rt, err := c.GetRouteTable(table)
		if err != nil {
			return Route{}, err
		}
		for _, x := range rt.Properties.Routes {
			if strings.EqualFold(x.Name, name) {
				return x, nil
			}
		}
		return Route{}, &Error{Code: CodeNotFound, Message: "route " + name + " of route table " + table + " not found"}
	}
	switch r.Method {
	case http.MethodGet:
		x, err := find()
		reply(w, http.StatusOK, x, err)
	case http.MethodPut:
		var x Route
		if !decode(w, r, &x) {
			return
		}
		x.Name = name
		_, missing := find()
		op, err := c.PutRoute(table, x)
		if err != nil {
			reply(w, 0, nil, err)
			return
		}
		out, _ := find()
		status := http.StatusOK
		if missing != nil {
			status = http.StatusCreated
		}
		accepted(w, r, status, out, op, version)
	case http.MethodDelete:
		if _, err := find(); err != nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		op, err := c.DeleteRoute(table, name)
		if err != nil {
			reply(w, 0, nil, err)
			return
		}
		accepted(w, r, http.StatusAccepted, nil, op, version)
	default:
		notAllowed(w, r)
	}
}

// accepted answers a write carried out asynchronously: the resource as it
// now stands (provisioningState Updating) and where to poll.
func accepted(w http.ResponseWriter, r *http.Request, status int, body any, op *Operation, version string) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	url := scheme + "://" + r.Host + op.ID + "?api-version=" + version
	w.Header().Set("Azure-AsyncOperation", url)
	if status == http.StatusAccepted {
		w.Header().Set("Location", url)
	}
	if body == nil {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, body)
}

func reply(w http.ResponseWriter, status int, body any, err error) {
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Code: CodeInternal, Message: err.Error()}
		}
		writeError(w, statusOf(e.Code), e)
		return
	}
	writeJSON(w, status, body)
}

func statusOf(code string) int {
	switch code {
	case CodeNotFound:
		return http.StatusNotFound
	case CodePrecondition:
		return http.StatusPreconditionFailed
	case CodeInvalid, CodeTooManyRoutes, CodeSubnetFull:
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<20)).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, &Error{Code: CodeInvalid, Message: "request body: " + err.Error()})
		return false
	}
	return true
}

func notAllowed(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusMethodNotAllowed, &Error{Code: CodeMethod, Message: r.Method + " is not supported on " + r.URL.Path})
}

func writeError(w http.ResponseWriter, status int, e *Error) {
	writeJSON(w, status, map[string]any{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (h *ArmHandler) fault() (int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.faults) == 0 {
		return 0, false
	}
	s := h.faults[0]
	h.faults = h.faults[1:]
	return s, true
}

// admit takes a token of the caller's read or write bucket, or says how
// long until one is there.
func (h *ArmHandler) admit(principal string, write bool) (time.Duration, bool) {
	rate := h.Limits.ReadsPerSecond
	if write {
		rate = h.Limits.WritesPerSecond
	}
	if rate <= 0 {
		return 0, true
	}
	burst := float64(max(h.Limits.Burst, 1))
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	if h.now != nil {
		now = h.now()
	}
	if h.buckets == nil {
		h.buckets = map[string]*bucket{}
	}
	key := kind(write) + " " + principal
	b, ok := h.buckets[key]
	if !ok {
		b = &bucket{tokens: burst, last: now}
		h.buckets[key] = b
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) / rate * float64(time.Second)), false
}
