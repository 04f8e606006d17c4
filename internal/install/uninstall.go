package install

import (
	"errors"
	"os"
	"path/filepath"
	"slices"

	"github.com/vnetcni/vnetcni/internal/netconf"
	"github.com/vnetcni/vnetcni/internal/thinplugin"
)

// Removed is the outcome of a file Uninstall deleted.
const Removed Outcome = "removed"

// Uninstall deletes what Install wrote, except the reference plugins
// (portmap, loopback), which other networks may use: the plugins, the
// conflist, the modules-load.d, cloud-init, networkd and NetworkManager
// files. Missing files are skipped.
func Uninstall(o Options) ([]Action, error) {
	paths := []string{
		filepath.Join(o.BinDir, netconf.PluginType), filepath.Join(o.BinDir, thinplugin.StandaloneName), filepath.Join(o.BinDir, netconf.IPAMType),
		filepath.Join(o.ConfDir, o.ConflistName),
	}
	if o.ModulesLoadDir != "" {
		paths = append(paths, filepath.Join(o.ModulesLoadDir, ModulesLoadFileName))
	}
	if o.CloudInitDir != "" {
		paths = append(paths, filepath.Join(o.CloudInitDir, CloudInitFileName))
	}
	for p := range o.managerFiles() {
		paths = append(paths, p)
	}
	slices.Sort(paths[len(paths)-len(o.managerFiles()):])
	var acts []Action
	var errs []error
	for _, p := range paths {
		err := os.Remove(p)
		switch {
		case err == nil:
			acts = append(acts, Action{p, Removed})
		case !errors.Is(err, os.ErrNotExist):
			errs = append(errs, err)
		}
	}
	return acts, errors.Join(errs...)
}
