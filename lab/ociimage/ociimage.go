// Package ociimage writes a single-layer container image as one tarball
// that is both an OCI image layout (oci-layout, index.json, blobs/) and a
// docker-archive (manifest.json pointing at the same blobs), so that
// `ctr images import`, `podman load` and `docker load` all accept it. The
// output is byte-for-byte deterministic: no registry is needed, and the
// same files always give the same image ID.
package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Media types of the OCI image specification.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"
)

// Annotations naming the image in index.json: containerd reads the first,
// OCI tools the second (the tag alone).
const (
	AnnotationContainerdName = "io.containerd.image.name"
	AnnotationRefName        = "org.opencontainers.image.ref.name"
)

// epoch is every file's modification time and the image's creation time.
var epoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// File is one file of the image's top layer.
type File struct {
	Path string      // inside the image, e.g. "pause" or "/pause"
	Mode fs.FileMode // permission bits, e.g. 0o755
	Data []byte
	// Link, when set, makes the file a symbolic link to Link (Data and
	// Mode are then unused).
	Link string
}

// Image is what to write.
type Image struct {
	// Name is the reference the runtimes will know it by, with a domain
	// and a tag, e.g. localhost/vnetcni/pause:v1.
	Name       string
	Entrypoint []string
	// Cmd is the default arguments (Kubernetes' args), or the command when
	// there is no entrypoint.
	Cmd   []string
	Env   []string
	Files []File
	// Base, when set, is an uncompressed layer tarball below the files'
	// layer, e.g. a root filesystem shared by several images: it is
	// written once per image, and a runtime stores it once.
	Base []byte
	// Arch is the GOARCH the files are for; runtime.GOARCH when empty.
	Arch string
}

// Descriptor points at a blob.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Platform is a descriptor's platform.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

type config struct {
	Created      time.Time     `json:"created"`
	Architecture string        `json:"architecture"`
	OS           string        `json:"os"`
	Config       runConfig     `json:"config"`
	RootFS       rootFS        `json:"rootfs"`
	History      []historyItem `json:"history"`
}

type runConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

type historyItem struct {
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by"`
}

// dockerManifest is one entry of a docker-archive's manifest.json.
type dockerManifest struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// Built is a written image's identity.
type Built struct {
	Manifest Descriptor
	Config   Descriptor
	Layer    Descriptor // the files' layer, on top
	Base     *Descriptor
}

// ID is the image ID the runtimes show: the config's digest.
func (b Built) ID() string { return b.Config.Digest }

// Validate checks an image before anything is written.
func (img Image) Validate() error {
	if err := validName(img.Name); err != nil {
		return err
	}
	if len(img.Entrypoint) == 0 && len(img.Cmd) == 0 {
		return fmt.Errorf("image %s: entrypoint and cmd are empty", img.Name)
	}
	if len(img.Files) == 0 && len(img.Base) == 0 {
		return fmt.Errorf("image %s: no files", img.Name)
	}
	seen := map[string]bool{}
	for _, f := range img.Files {
		p := cleanPath(f.Path)
		if p == "" { // cleaning rooted at "/" keeps every other path inside the image
			return fmt.Errorf("image %s: file path %q names the root", img.Name, f.Path)
		}
		if seen[p] {
			return fmt.Errorf("image %s: file %q twice", img.Name, f.Path)
		}
		seen[p] = true
	}
	return nil
}

// validName wants domain/path:tag, the domain holding a '.' or ':' or being
// localhost, so that no runtime prefixes docker.io/ or library/.
func validName(name string) error {
	slash := strings.IndexByte(name, '/')
	colon := strings.LastIndexByte(name, ':')
	if slash <= 0 || colon < slash {
		return fmt.Errorf("image name %q: want DOMAIN/PATH:TAG", name)
	}
	domain := name[:slash]
	if domain != "localhost" && !strings.ContainsAny(domain, ".:") {
		return fmt.Errorf("image name %q: domain %q is not a registry domain (use localhost)", name, domain)
	}
	if colon == len(name)-1 || name != strings.ToLower(name[:colon])+name[colon:] {
		return fmt.Errorf("image name %q: want a lower-case repository and a tag", name)
	}
	return nil
}

func cleanPath(p string) string {
	p = path.Clean("/" + p)
	return strings.TrimPrefix(p, "/")
}

// Write writes the image tarball to w.
func (img Image) Write(w io.Writer) (Built, error) {
	if err := img.Validate(); err != nil {
		return Built{}, err
	}
	arch := img.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	layer, err := img.layer()
	if err != nil {
		return Built{}, err
	}
	b := Built{Layer: descriptor(MediaTypeLayer, layer)}
	layers := []Descriptor{b.Layer}
	blobs := [][]byte{layer}
	history := []historyItem{{Created: epoch, CreatedBy: "vnetcni ociimage"}}
	if len(img.Base) > 0 {
		base := descriptor(MediaTypeLayer, img.Base)
		b.Base = &base
		layers = []Descriptor{base, b.Layer}
		blobs = [][]byte{img.Base, layer}
		history = append([]historyItem{{Created: epoch, CreatedBy: "vnetcni ociimage: base"}}, history...)
	}
	var diffIDs, layerPaths []string
	for _, l := range layers {
		diffIDs = append(diffIDs, l.Digest)
		layerPaths = append(layerPaths, blobPath(l))
	}
	cfg, err := json.Marshal(config{
		Created:      epoch,
		Architecture: arch,
		OS:           "linux",
		Config:       runConfig{Entrypoint: img.Entrypoint, Cmd: img.Cmd, Env: img.Env, WorkingDir: "/"},
		RootFS:       rootFS{Type: "layers", DiffIDs: diffIDs},
		History:      history,
	})
	if err != nil {
		return Built{}, err
	}
	b.Config = descriptor(MediaTypeConfig, cfg)
	man, err := json.Marshal(manifest{SchemaVersion: 2, MediaType: MediaTypeManifest, Config: b.Config, Layers: layers})
	if err != nil {
		return Built{}, err
	}
	b.Manifest = descriptor(MediaTypeManifest, man)
	ref := b.Manifest
	ref.Annotations = map[string]string{AnnotationContainerdName: img.Name, AnnotationRefName: img.Name[strings.LastIndexByte(img.Name, ':')+1:]}
	ref.Platform = &Platform{Architecture: arch, OS: "linux"}
	idx, err := json.Marshal(index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []Descriptor{ref}})
	if err != nil {
		return Built{}, err
	}
	dm, err := json.Marshal([]dockerManifest{{Config: blobPath(b.Config), RepoTags: []string{img.Name}, Layers: layerPaths}})
	if err != nil {
		return Built{}, err
	}

	tw := tar.NewWriter(w)
	dirs := []string{"blobs/", "blobs/sha256/"}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return Built{}, err
		}
	}
	files := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", idx},
		{"manifest.json", dm},
		{blobPath(b.Config), cfg},
		{blobPath(b.Manifest), man},
	}
	for i, l := range layers {
		files = append(files, struct {
			name string
			data []byte
		}{blobPath(l), blobs[i]})
	}
	for _, f := range files {
		if err := writeFile(tw, f.name, 0o644, f.data); err != nil {
			return Built{}, err
		}
	}
	return b, tw.Close()
}

// layer is the uncompressed layer tar: the files and their parent
// directories, in path order.
func (img Image) layer() ([]byte, error) {
	files := append([]File(nil), img.Files...)
	sort.Slice(files, func(i, j int) bool { return cleanPath(files[i].Path) < cleanPath(files[j].Path) })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	made := map[string]bool{}
	for _, f := range files {
		p := cleanPath(f.Path)
		var parents []string
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if made[d] {
				continue
			}
			made[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
		}
		if f.Link != "" {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: f.Link, Mode: 0o777, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return nil, fmt.Errorf("write %s: %w", p, err)
			}
			continue
		}
		mode := f.Mode.Perm()
		if mode == 0 {
			mode = 0o644
		}
		if err := writeFile(tw, p, int64(mode), f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func descriptor(mediaType string, b []byte) Descriptor {
	sum := sha256.Sum256(b)
	return Descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(b))}
}

func blobPath(d Descriptor) string {
	return "blobs/sha256/" + strings.TrimPrefix(d.Digest, "sha256:")
}
