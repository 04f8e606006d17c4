package datapath

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
)

// The legacy iptables backend (iptables-legacy, x_tables) keeps its tables
// apart from nftables: a FORWARD policy of DROP set with it (Docker on a
// node whose iptables alternative is legacy) is invisible to the nftables
// API, and it drops what any nftables table accepts. So when the node's
// namespace has a legacy filter table the network's accepts go there too,
// with iptables-legacy, the only interface to x_tables. Whether there is
// one is read from /proc (the kernel lists a namespace's legacy tables in
// ip_tables_names once it has any), so a node without legacy tables, the
// usual case, never spawns a process for it.
const legacyTablesFile = "/proc/thread-self/net/ip_tables_names"

// LegacyIPTables names the iptables-legacy binary; a variable so tests can
// point it elsewhere. Looked up in PATH, then where distributions keep it.
var LegacyIPTables = "iptables-legacy"

// inNFTNamespace runs fn in the namespace of an nftables connection: the
// one it was opened in (nftables.WithNetNSFd), else the caller's.
func inNFTNamespace(c *nftables.Conn, fn func() error) error {
	if c == nil || c.NetNS == 0 {
		return fn()
	}
	return ns.WithNetNSPath(fmt.Sprintf("/proc/self/fd/%d", c.NetNS), func(ns.NetNS) error { return fn() })
}

// legacyFilter reports whether the calling thread's namespace has a legacy
// filter table.
func legacyFilter() (bool, error) {
	b, err := os.ReadFile(legacyTablesFile)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // no x_tables in this kernel
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", legacyTablesFile, err)
	}
	return slices.Contains(strings.Fields(string(b)), foreignFilterTable), nil
}

func legacyBinary() (string, error) {
	if p, err := exec.LookPath(LegacyIPTables); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin/", "/sbin/", "/usr/bin/"} {
		if _, err := os.Stat(dir + LegacyIPTables); err == nil {
			return dir + LegacyIPTables, nil
		}
	}
	return "", fmt.Errorf("the node has a legacy iptables filter table but %s is not installed", LegacyIPTables)
}

// iptablesLegacy runs iptables-legacy in the calling thread's namespace,
// waiting for the xtables lock. Equivalent to: iptables-legacy -w 5 ARGS.
func iptablesLegacy(args ...string) (string, error) {
	bin, err := legacyBinary()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(bin, append([]string{"-w", "5"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", LegacyIPTables, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// legacyRuleSpecs are forwardRules in iptables syntax, top first.
func (r Rules) legacyRuleSpecs() [][]string {
	comment := []string{"-m", "comment", "--comment", forwardComment(r.Network), "-j", "ACCEPT"}
	if r.Mode == ModeBridge {
		return [][]string{
			append([]string{"-i", r.Bridge, "-s", r.Subnet.Masked().String()}, comment...),
			append([]string{"-o", r.Bridge, "-d", r.Subnet.Masked().String()}, comment...),
		}
	}
	return [][]string{
		append([]string{"-i", HostIfPrefix + "+"}, comment...),
		append([]string{"-o", HostIfPrefix + "+"}, comment...),
	}
}

// legacyState reads the legacy FORWARD chain: whether its policy drops,
// and the line numbers of the network's rules, highest first.
func (r Rules) legacyState() (drops bool, ours []int, err error) {
	out, err := iptablesLegacy("-t", foreignFilterTable, "-L", foreignForwardChain, "-n", "--line-numbers")
	if err != nil {
		return false, nil, err
	}
	tag := "/* " + forwardComment(r.Network) + " */"
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "Chain "+foreignForwardChain+" (policy DROP") {
			drops = true
		}
		if f := strings.Fields(line); len(f) > 0 && strings.Contains(line, tag) {
			if n, err := strconv.Atoi(f[0]); err == nil {
				ours = append(ours, n)
			}
		}
	}
	slices.Sort(ours)
	slices.Reverse(ours)
	return drops, ours, nil
}

// legacyForwardMissing reports whether a legacy FORWARD chain drops by
// policy and lacks the network's accepts.
func (r Rules) legacyForwardMissing() (bool, error) {
	if ok, err := legacyFilter(); err != nil || !ok {
		return false, err
	}
	drops, ours, err := r.legacyState()
	if err != nil || !drops {
		return false, err
	}
	return len(ours) != len(r.legacyRuleSpecs()), nil
}

// ensureLegacyForward puts the network's accepts at the top of a legacy
// FORWARD chain that drops by policy, replacing an incomplete set.
// Equivalent to: iptables-legacy -I FORWARD 1 -i BRIDGE -s SUBNET -m
// comment --comment "azure-vnet NETWORK" -j ACCEPT, and its reverse.
func (r Rules) ensureLegacyForward() error {
	if ok, err := legacyFilter(); err != nil || !ok {
		return err
	}
	drops, ours, err := r.legacyState()
	if err != nil || !drops {
		return err
	}
	want := r.legacyRuleSpecs()
	if len(ours) == len(want) {
		return nil
	}
	for _, n := range ours {
		if _, err := iptablesLegacy("-t", foreignFilterTable, "-D", foreignForwardChain, strconv.Itoa(n)); err != nil {
			return err
		}
	}
	for i := len(want) - 1; i >= 0; i-- {
		if _, err := iptablesLegacy(append([]string{"-t", foreignFilterTable, "-I", foreignForwardChain, "1"}, want[i]...)...); err != nil {
			return fmt.Errorf("accept pod traffic in legacy iptables: %w", err)
		}
	}
	return nil
}

// removeLegacyForward deletes the network's accepts from the legacy
// FORWARD chain, whatever its policy now.
func (r Rules) removeLegacyForward() error {
	if ok, err := legacyFilter(); err != nil || !ok {
		return err
	}
	_, ours, err := r.legacyState()
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range ours { // highest first: the lower numbers stay valid
		if _, err := iptablesLegacy("-t", foreignFilterTable, "-D", foreignForwardChain, strconv.Itoa(n)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
