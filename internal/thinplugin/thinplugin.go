// Package thinplugin is azure-vnet as a node with vnetd runs it: read the
// CNI call, hand it to the agent over its socket, print the answer.
// Everything else — no agent, an agent that cannot serve the call, the
// commands it does not forward, a call skel would refuse — is handed to
// the standalone plugin (StandaloneName, beside this binary) by exec, with
// stdin intact, so such calls behave exactly as the plugin always did.
//
// It links only agentapi (syscall and encoding/json) and no fmt, net,
// CNI library or netlink: a Go process pays at start for every package it
// links (see docs/agent.md, "Start cost of the client"), and this process
// starts once per CNI call.
package thinplugin

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/vnetcni/vnetcni/internal/agentapi"
	"github.com/vnetcni/vnetcni/internal/buildinfo"
)

// StandaloneName is the full plugin's binary, installed beside the thin
// one: it runs every command itself and also talks to the agent.
const StandaloneName = "azure-vnet-standalone"

// Environment the thin plugin reads itself; the rest is forwarded.
const (
	envAgent    = "AZURE_VNET_AGENT"     // "off": always standalone
	envStateDir = "AZURE_VNET_STATE_DIR" // store.EnvDir
	envTrace    = "AZURE_VNET_TRACE"
	defaultDir  = "/var/run/azure-vnet" // store.DefaultDir
)

// Main runs one call of plugin name and returns the exit code. It returns
// only when the agent answered; otherwise it execs the standalone plugin.
func Main(name string) int {
	cmd := os.Getenv("CNI_COMMAND")
	if !forwarded(cmd) || os.Getenv(envAgent) == "off" || !validEnv(cmd) {
		return standalone(nil)
	}
	dir := os.Getenv(envStateDir)
	if dir == "" {
		dir = defaultDir
	}
	socket := agentapi.SocketPath(dir)
	var st syscall.Stat_t
	if syscall.Stat(socket, &st) != nil {
		// No agent on this node: stdin is still unread.
		return standalone(nil)
	}
	stdin, err := io.ReadAll(os.Stdin)
	if err != nil || !validConfig(stdin) {
		return standalone(stdin)
	}
	trace := os.Getenv(envTrace) == "1"
	resp, err := agentapi.Call(socket, &agentapi.Request{
		Plugin: name, Version: buildinfo.String(), Command: cmd, Trace: trace,
		ContainerID: os.Getenv("CNI_CONTAINERID"), Netns: os.Getenv("CNI_NETNS"), IfName: os.Getenv("CNI_IFNAME"),
		Args: os.Getenv("CNI_ARGS"), Path: os.Getenv("CNI_PATH"), Stdin: stdin, HostNetNS: agentapi.NetNSID(),
	})
	if err != nil {
		// No agent listens, or it went away mid-call: every forwarded
		// command is idempotent, so the standalone plugin runs it again.
		if trace && err != agentapi.ErrNoAgent {
			os.Stderr.WriteString(name + ": " + err.Error() + "; running standalone\n")
		}
		return standalone(stdin)
	}
	if resp.Foreign {
		return standalone(stdin)
	}
	if resp.Proto != agentapi.Proto {
		return printError(&agentapi.Error{Code: agentapi.CodeMismatch, Msg: name + " " + buildinfo.String() + " speaks agent protocol " +
			strconv.Itoa(agentapi.Proto) + ", vnetd " + resp.Version + " answered in " + strconv.Itoa(resp.Proto) +
			": install plugins and agent of one release"})
	}
	if resp.Trace != "" {
		os.Stderr.WriteString(resp.Trace)
	}
	if resp.Error != nil && resp.Error.Code == codeInvalidNetNS {
		// The agent resolves CNI_NETNS in its own mount namespace; this
		// process sees what the runtime meant.
		return standalone(stdin)
	}
	if resp.Error != nil {
		return printError(resp.Error)
	}
	if _, err := os.Stdout.Write(resp.Stdout); err != nil {
		return 1
	}
	return 0
}

// codeInvalidNetNS is CNI's error code 8 (types.ErrInvalidNetNS; TestCodes keeps it so).
const codeInvalidNetNS = 8

// forwarded are the commands the thin plugin hands to the agent: the ones
// a runtime makes per pod. VERSION, CHECK, GC and STATUS run standalone.
func forwarded(cmd string) bool { return cmd == "ADD" || cmd == "DEL" }

// validEnv reports whether skel would accept the call's environment; when
// it would not, the standalone plugin says why, in skel's words.
func validEnv(cmd string) bool {
	if !validID(os.Getenv("CNI_CONTAINERID")) || !validIfName(os.Getenv("CNI_IFNAME")) || os.Getenv("CNI_PATH") == "" {
		return false
	}
	return cmd != "ADD" || os.Getenv("CNI_NETNS") != ""
}

// validID is skel's container ID and network name rule:
// ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$.
func validID(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}

// validIfName is skel's interface name rule, ASCII only (anything else
// goes to the standalone plugin).
func validIfName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '/' || c == ':' || c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// validConfig reports whether skel would accept the network configuration:
// it decodes, has a valid name and a CNI version the plugin supports.
func validConfig(stdin []byte) bool {
	var c struct {
		Name       string `json:"name"`
		CNIVersion string `json:"cniVersion"`
	}
	if json.Unmarshal(stdin, &c) != nil || !validID(c.Name) {
		return false
	}
	for _, v := range agentapi.CNIVersions {
		if v == c.CNIVersion {
			return true
		}
	}
	return false
}

// printError prints a CNI error as skel does and returns the exit code.
func printError(e *agentapi.Error) int {
	b, err := json.MarshalIndent(struct {
		Code    uint   `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details,omitempty"`
	}{e.Code, e.Msg, e.Details}, "", "    ")
	if err == nil {
		os.Stdout.Write(b)
	}
	return 1
}

// standalone execs the full plugin beside this binary. stdin, when this
// process has read it, is given to it again through an unlinked file.
func standalone(stdin []byte) int {
	self, err := os.Executable()
	if err != nil {
		return fail("find own binary: " + err.Error())
	}
	path := filepath.Join(filepath.Dir(self), StandaloneName)
	if stdin != nil {
		f, err := os.CreateTemp("", "azure-vnet-stdin-")
		if err != nil {
			return fail("keep stdin for " + StandaloneName + ": " + err.Error())
		}
		os.Remove(f.Name())
		if _, err := f.Write(stdin); err != nil {
			return fail("keep stdin for " + StandaloneName + ": " + err.Error())
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fail("keep stdin for " + StandaloneName + ": " + err.Error())
		}
		if err := syscall.Dup3(int(f.Fd()), 0, 0); err != nil {
			return fail("keep stdin for " + StandaloneName + ": " + err.Error())
		}
	}
	args := append([]string{path}, os.Args[1:]...)
	err = syscall.Exec(path, args, os.Environ())
	return fail("run " + path + ": " + err.Error() + " (install the release's " + StandaloneName + " beside azure-vnet)")
}

// fail reports an error of the thin plugin itself as a CNI error (999).
func fail(msg string) int {
	return printError(&agentapi.Error{Code: 999, Msg: "azure-vnet: " + msg})
}
