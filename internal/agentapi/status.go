package agentapi

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/vnetcni/vnetcni/internal/buildinfo"
)

// Status is what `vnetctl status` shows, from /status or the socket.
type Status struct {
	Version    string         `json:"version"`
	PID        int            `json:"pid"`
	StateDir   string         `json:"stateDir"`
	Ready      bool           `json:"ready"`
	Networks   []string       `json:"networks"`
	LastResync time.Time      `json:"lastResync,omitzero"`
	Repairs    map[string]int `json:"repairs"`
	Pools      []PoolStatus   `json:"pools"`
}

// PoolStatus is one NIC's pool.
type PoolStatus struct {
	NIC    string    `json:"nic"`
	Source string    `json:"source"`
	ReadAt time.Time `json:"readAt"`
	Total  int       `json:"total"`
	Used   int       `json:"used"`
	Free   int       `json:"free"`
}

// StatusCommand is the agentapi command that asks the agent for its Status
// over the socket (answered in Response.Stdout as JSON).
const StatusCommand = "VNETD-STATUS"

// GetStatus asks the agent serving stateDir for its status over its socket.
func GetStatus(stateDir string) (*Status, error) {
	resp, err := Call(SocketPath(stateDir), &Request{Plugin: "vnetctl", Version: buildinfo.String(), Command: StatusCommand})
	if err != nil {
		return nil, err
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	var s Status
	if err := json.Unmarshal(resp.Stdout, &s); err != nil {
		return nil, fmt.Errorf("decode agent status: %w", err)
	}
	return &s, nil
}
