package agent

import (
	"io"
	"log/slog"
	"testing"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/netconf"
)

// TestForeignNamespace: an agent does nothing for a plugin of another
// network namespace (its VM's namespace was made anew under it) and says
// so, and the plugin runs the command itself; requests of its own
// namespace and of plugins that do not say are served.
func TestForeignNamespace(t *testing.T) {
	a := New(Config{StateDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	foreign := a.run(&agentapi.Request{Proto: agentapi.Proto, Plugin: netconf.PluginType, Command: "STATUS", HostNetNS: "0:0", Stdin: []byte(`{}`)})
	if !foreign.Foreign || foreign.Error != nil {
		t.Errorf("request from another namespace: %+v, want Foreign and no error", foreign)
	}
	own := a.run(&agentapi.Request{Proto: agentapi.Proto, Plugin: netconf.PluginType, Command: "STATUS", HostNetNS: agentapi.NetNSID(), Stdin: []byte(`{}`)})
	if own.Foreign {
		t.Errorf("request from the agent's own namespace refused as foreign")
	}
	if own.Error == nil {
		t.Errorf("STATUS with an empty config: no error, want the config error from the plugin's own code")
	}
}
