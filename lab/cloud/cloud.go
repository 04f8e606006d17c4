// Package cloud is the lab's Azure Resource Manager for network resources:
// ARM-shaped resources (names, IDs, properties, provisioning states) whose
// writes are accepted or refused at once and then carried out
// asynchronously, returning an operation to poll, as ARM's PUT and DELETE
// do. Carrying out a write changes the emulated fabric.
//
// Route tables (with their routes and subnet associations) and network
// interfaces (with their IP configurations) are the resources so far; load
// balancers, NSGs and public IPs are meant to join them behind the same
// operations. ArmHandler serves them over HTTP as ARM's REST API does. Controllers — the route
// controller of a kubenet cluster, later a LoadBalancer Service controller
// and the dynamic-IP controller — use this API and nothing else.
package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vnetcni/vnetcni/lab/fabric"
)

// Fabric is what the cloud changes.
type Fabric interface {
	SetRouteTable(fabric.RouteTable) error
	DeleteRouteTable(name string) error
}

// Provisioning and operation states, ARM's words.
const (
	StateSucceeded  = "Succeeded"
	StateUpdating   = "Updating"
	StateFailed     = "Failed"
	StateInProgress = "InProgress"
)

// NextHopVirtualAppliance is the only next hop type the lab's routes
// have: an address in the VNet (a node) that forwards.
const NextHopVirtualAppliance = "VirtualAppliance"

// Error codes of refused requests and failed operations. The codes are
// the lab's own; the shape (code, message) is ARM's.
const (
	CodeInvalid       = "InvalidRequestFormat"
	CodeNotFound      = "NotFound"
	CodeTooManyRoutes = "RouteTableRouteLimitExceeded"
	CodeFabric        = "FabricOperationFailed"
)

// Error is an ARM-style error.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// IsTooManyRoutes reports whether err refuses a route past a route table's
// limit.
func IsTooManyRoutes(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == CodeTooManyRoutes
}

// RouteTable is Microsoft.Network/routeTables.
type RouteTable struct {
	ID         string               `json:"id"`
	Name       string               `json:"name"`
	Type       string               `json:"type"`
	Properties RouteTableProperties `json:"properties"`
}

// RouteTableProperties are a route table's routes and associated subnets.
type RouteTableProperties struct {
	Routes            []Route       `json:"routes"`
	Subnets           []SubResource `json:"subnets"`
	ProvisioningState string        `json:"provisioningState,omitempty"`
}

// Route is Microsoft.Network/routeTables/routes.
type Route struct {
	ID         string          `json:"id,omitempty"`
	Name       string          `json:"name"`
	Properties RouteProperties `json:"properties"`
}

// RouteProperties: where a prefix goes.
type RouteProperties struct {
	AddressPrefix     string `json:"addressPrefix"`
	NextHopType       string `json:"nextHopType"`
	NextHopIPAddress  string `json:"nextHopIpAddress"`
	ProvisioningState string `json:"provisioningState,omitempty"`
}

// SubResource refers to another resource by ID.
type SubResource struct {
	ID string `json:"id"`
}

// Operation is an accepted write being carried out (ARM's
// Azure-AsyncOperation): poll it with Cloud.Operation or wait with Wait.
type Operation struct {
	ID     string `json:"id"`
	Status string `json:"status"` // InProgress, Succeeded, Failed
	Error  *Error `json:"error,omitempty"`
}

// Cloud serves one lab's resources. Writes to one resource are carried
// out one at a time, in the order accepted, each after the cloud's
// operation latency; writes to different resources run side by side, as
// ARM's do.
type Cloud struct {
	fab     Fabric
	nicFab  NICFabric               // nil: the fabric has no NICs to write
	prefix  string                  // resource ID prefix of the resource group
	subnets map[string]netip.Prefix // subnet ID → prefix

	fabMu sync.Mutex // one fabric change at a time

	mu      sync.Mutex
	latency time.Duration
	tables  map[string]*RouteTable
	nics    map[string]*NetworkInterface
	nicVM   map[string]string // NIC name → VM name
	ops     map[string]*Operation
	done    map[string]chan struct{}
	queues  map[string][]func() // per resource ID, writes accepted and not yet run
	seq     int
}

// Location is the lab region's name, as ARM resources carry one.
const Location = "lab"

// Subnet names a subnet of the lab's VNet.
type Subnet struct {
	Name   string
	Prefix netip.Prefix
}

// New serves the resources of resource group rg and virtual network vnet,
// whose subnets are subnets, carrying writes out on f. When f can also
// change NICs (NICFabric), every VM's network interface is a resource.
// Close stops it.
func New(f Fabric, rg, vnet string, subnets []Subnet) *Cloud {
	c := &Cloud{
		fab:     f,
		prefix:  "/subscriptions/" + Subscription + "/resourceGroups/" + rg + "/providers/Microsoft.Network",
		subnets: map[string]netip.Prefix{},
		tables:  map[string]*RouteTable{},
		nics:    map[string]*NetworkInterface{},
		nicVM:   map[string]string{},
		ops:     map[string]*Operation{},
		done:    map[string]chan struct{}{},
		queues:  map[string][]func(){},
	}
	c.nicFab, _ = f.(NICFabric)
	for _, s := range subnets {
		c.subnets[c.SubnetID(vnet, s.Name)] = s.Prefix
	}
	return c
}

// Subscription is the lab's subscription ID.
const Subscription = "lab"

// SetLatency makes every write accepted from now on wait d before it is
// carried out (Azure's take about a second; the default is none).
func (c *Cloud) SetLatency(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.latency = d
}

// Close says the caller is done with the cloud. Writes already accepted
// are still carried out; their operations can still be waited for.
func (c *Cloud) Close() {}

// Adopt records route tables the fabric already has (a lab being repaired)
// as existing resources, without writing anything.
func (c *Cloud) Adopt(tables []fabric.RouteTable) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ft := range tables {
		rt := &RouteTable{ID: c.RouteTableID(ft.Name), Name: ft.Name, Type: "Microsoft.Network/routeTables",
			Properties: RouteTableProperties{ProvisioningState: StateSucceeded}}
		for id, p := range c.subnets {
			if slices.Contains(ft.Subnets, p) {
				rt.Properties.Subnets = append(rt.Properties.Subnets, SubResource{ID: id})
			}
		}
		for _, r := range ft.Routes {
			rt.Properties.Routes = append(rt.Properties.Routes, Route{ID: rt.ID + "/routes/" + r.Name, Name: r.Name, Properties: RouteProperties{
				AddressPrefix: r.AddressPrefix.String(), NextHopType: NextHopVirtualAppliance, NextHopIPAddress: r.NextHop.String(),
				ProvisioningState: StateSucceeded}})
		}
		c.tables[ft.Name] = rt
	}
}

// SubnetID is the resource ID of a subnet.
func (c *Cloud) SubnetID(vnet, subnet string) string {
	return c.prefix + "/virtualNetworks/" + vnet + "/subnets/" + subnet
}

// RouteTableID is the resource ID of a route table.
func (c *Cloud) RouteTableID(name string) string { return c.prefix + "/routeTables/" + name }

// GetRouteTable returns a route table as last written, with its
// provisioning state.
func (c *Cloud) GetRouteTable(name string) (RouteTable, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rt, ok := c.tables[name]
	if !ok {
		return RouteTable{}, &Error{Code: CodeNotFound, Message: "route table " + name + " not found"}
	}
	out := *rt
	out.Properties.Routes = slices.Clone(rt.Properties.Routes)
	out.Properties.Subnets = slices.Clone(rt.Properties.Subnets)
	return out, nil
}

// PutRouteTable creates or replaces a route table. A malformed table, or
// one with more routes than fabric.MaxRoutesPerTable, is refused at once;
// otherwise the returned operation carries it out.
func (c *Cloud) PutRouteTable(rt RouteTable) (*Operation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.putLocked(rt)
}

// PutRoute creates or replaces one route of an existing route table.
func (c *Cloud) PutRoute(table string, r Route) (*Operation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok := c.tables[table]
	if !ok {
		return nil, &Error{Code: CodeNotFound, Message: "route table " + table + " not found"}
	}
	next := *cur
	next.Properties.Routes = slices.Clone(cur.Properties.Routes)
	if i := slices.IndexFunc(next.Properties.Routes, func(x Route) bool { return x.Name == r.Name }); i >= 0 {
		next.Properties.Routes[i] = r
	} else {
		next.Properties.Routes = append(next.Properties.Routes, r)
	}
	return c.putLocked(next)
}

// DeleteRoute removes one route; a route that does not exist is fine.
func (c *Cloud) DeleteRoute(table, route string) (*Operation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok := c.tables[table]
	if !ok {
		return nil, &Error{Code: CodeNotFound, Message: "route table " + table + " not found"}
	}
	next := *cur
	next.Properties.Routes = slices.DeleteFunc(slices.Clone(cur.Properties.Routes), func(x Route) bool { return x.Name == route })
	return c.putLocked(next)
}

// DeleteRouteTable removes a route table and its routes from the fabric.
func (c *Cloud) DeleteRouteTable(name string) (*Operation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.tables, name)
	return c.startLocked(c.RouteTableID(name), func() error { return c.fab.DeleteRouteTable(name) }, nil), nil
}

func (c *Cloud) putLocked(rt RouteTable) (*Operation, error) {
	ft, err := c.toFabric(rt)
	if err != nil {
		return nil, err
	}
	rt.ID = c.RouteTableID(rt.Name)
	rt.Type = "Microsoft.Network/routeTables"
	rt.Properties.ProvisioningState = StateUpdating
	for i := range rt.Properties.Routes {
		r := &rt.Properties.Routes[i]
		r.ID = rt.ID + "/routes/" + r.Name
		r.Properties.ProvisioningState = StateUpdating
	}
	stored := rt
	c.tables[rt.Name] = &stored
	return c.startLocked(rt.ID, func() error { return c.fab.SetRouteTable(ft) }, func(ok bool) {
		state := StateSucceeded
		if !ok {
			state = StateFailed
		}
		// Only if no later write replaced it meanwhile.
		if cur := c.tables[rt.Name]; cur == &stored {
			cur.Properties.ProvisioningState = state
			for i := range cur.Properties.Routes {
				cur.Properties.Routes[i].Properties.ProvisioningState = state
			}
		}
	}), nil
}

// toFabric validates a route table and turns it into the fabric's.
func (c *Cloud) toFabric(rt RouteTable) (fabric.RouteTable, error) {
	bad := func(format string, a ...any) error {
		return &Error{Code: CodeInvalid, Message: fmt.Sprintf("route table %s: ", rt.Name) + fmt.Sprintf(format, a...)}
	}
	ft := fabric.RouteTable{Name: rt.Name}
	if n := len(rt.Properties.Routes); n > fabric.MaxRoutesPerTable {
		return ft, &Error{Code: CodeTooManyRoutes, Message: fmt.Sprintf("route table %s: %d routes: a route table holds at most %d (kubenet: at most %d nodes)",
			rt.Name, n, fabric.MaxRoutesPerTable, fabric.MaxRoutesPerTable)}
	}
	for _, s := range rt.Properties.Subnets {
		p, ok := c.subnets[s.ID]
		if !ok {
			return ft, bad("subnet %s: no such subnet", s.ID)
		}
		ft.Subnets = append(ft.Subnets, p)
	}
	for i, r := range rt.Properties.Routes {
		p, err := netip.ParsePrefix(strings.TrimSpace(r.Properties.AddressPrefix))
		if err != nil || !p.Addr().Is4() || p != p.Masked() {
			return ft, bad("routes[%d] %s: addressPrefix %q: want an IPv4 CIDR", i, r.Name, r.Properties.AddressPrefix)
		}
		if r.Properties.NextHopType != NextHopVirtualAppliance {
			return ft, bad("routes[%d] %s: nextHopType %q: the lab supports %s", i, r.Name, r.Properties.NextHopType, NextHopVirtualAppliance)
		}
		hop, err := netip.ParseAddr(strings.TrimSpace(r.Properties.NextHopIPAddress))
		if err != nil || !hop.Is4() {
			return ft, bad("routes[%d] %s: nextHopIpAddress %q: want an IPv4 address", i, r.Name, r.Properties.NextHopIPAddress)
		}
		ft.Routes = append(ft.Routes, fabric.Route{Name: r.Name, AddressPrefix: p, NextHop: hop})
	}
	return ft, nil
}

// startLocked queues fn as a new operation on resource; finish runs under
// the lock with its outcome.
func (c *Cloud) startLocked(resource string, fn func() error, finish func(ok bool)) *Operation {
	c.seq++
	op := &Operation{ID: fmt.Sprintf("%s/locations/%s/operations/%d", c.prefix, Location, c.seq), Status: StateInProgress}
	c.ops[op.ID] = op
	done := make(chan struct{})
	c.done[op.ID] = done
	latency := c.latency
	run := func() {
		time.Sleep(latency)
		c.fabMu.Lock()
		err := fn()
		c.fabMu.Unlock()
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			op.Status, op.Error = StateFailed, &Error{Code: CodeFabric, Message: err.Error()}
		} else {
			op.Status = StateSucceeded
		}
		if finish != nil {
			finish(err == nil)
		}
		close(done)
	}
	q, busy := c.queues[resource]
	c.queues[resource] = append(q, run)
	if !busy {
		go c.drain(resource)
	}
	return &Operation{ID: op.ID, Status: op.Status}
}

// drain runs resource's accepted writes in order until none is left.
func (c *Cloud) drain(resource string) {
	for {
		c.mu.Lock()
		q := c.queues[resource]
		if len(q) == 0 {
			delete(c.queues, resource)
			c.mu.Unlock()
			return
		}
		next := q[0]
		c.queues[resource] = q[1:]
		c.mu.Unlock()
		next()
	}
}

// Operation returns an operation's current status.
func (c *Cloud) Operation(id string) (Operation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	op, ok := c.ops[id]
	if !ok {
		return Operation{}, &Error{Code: CodeNotFound, Message: "operation " + id + " not found"}
	}
	return *op, nil
}

// pollInterval is how often Wait polls, as an ARM client honours
// Retry-After.
const pollInterval = 5 * time.Millisecond

// Wait polls an operation until it ends; a failed operation is its error.
func (c *Cloud) Wait(ctx context.Context, op *Operation) error {
	c.mu.Lock()
	done := c.done[op.ID]
	c.mu.Unlock()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		st, err := c.Operation(op.ID)
		if err != nil {
			return err
		}
		switch st.Status {
		case StateSucceeded:
			return nil
		case StateFailed:
			return st.Error
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
		case <-t.C:
		}
	}
}
