package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func testImage() Image {
	return Image{Name: "localhost/vnetcni/pause:v1", Entrypoint: []string{"/pause"},
		Files: []File{{Path: "/bin/pause", Mode: 0o755, Data: []byte("#!pause")}}, Arch: "amd64"}
}

func readTar(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		files[h.Name] = data
	}
}

func TestWriteIsALayoutAndADockerArchive(t *testing.T) {
	var buf bytes.Buffer
	built, err := testImage().Write(&buf)
	if err != nil {
		t.Fatal(err)
	}
	files := readTar(t, buf.Bytes())
	// Every blob is named by its digest.
	for name, data := range files {
		if !strings.HasPrefix(name, "blobs/sha256/") || strings.HasSuffix(name, "/") {
			continue
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != strings.TrimPrefix(name, "blobs/sha256/") {
			t.Errorf("blob %s has digest %s", name, got)
		}
	}
	var idx index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json: %s (%v)", files["index.json"], err)
	}
	if got := idx.Manifests[0].Annotations; got[AnnotationContainerdName] != "localhost/vnetcni/pause:v1" || got[AnnotationRefName] != "v1" {
		t.Errorf("index annotations %v, want the name for containerd and the tag as ref name", got)
	}
	if idx.Manifests[0].Digest != built.Manifest.Digest {
		t.Errorf("index points at %s, want the manifest %s", idx.Manifests[0].Digest, built.Manifest.Digest)
	}
	var dm []dockerManifest
	if err := json.Unmarshal(files["manifest.json"], &dm); err != nil {
		t.Fatal(err)
	}
	want := []dockerManifest{{Config: blobPath(built.Config), RepoTags: []string{"localhost/vnetcni/pause:v1"}, Layers: []string{blobPath(built.Layer)}}}
	if d := cmp.Diff(want, dm); d != "" {
		t.Errorf("manifest.json (-want +got):\n%s", d)
	}
	var cfg config
	if err := json.Unmarshal(files[blobPath(built.Config)], &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.RootFS.DiffIDs[0] != built.Layer.Digest || cfg.Architecture != "amd64" || cfg.Config.Entrypoint[0] != "/pause" {
		t.Errorf("config %+v: want the layer's diff ID, amd64 and the entrypoint", cfg)
	}
	layer := readTar(t, files[blobPath(built.Layer)])
	if string(layer["bin/pause"]) != "#!pause" {
		t.Errorf("layer files %v, want bin/pause", keys(layer))
	}
	if _, ok := layer["bin/"]; !ok {
		t.Errorf("layer files %v, want the parent directory bin/", keys(layer))
	}
}

func keys(m map[string][]byte) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

func TestWriteIsDeterministic(t *testing.T) {
	var a, b bytes.Buffer
	ba, err := testImage().Write(&a)
	if err != nil {
		t.Fatal(err)
	}
	bb, _ := testImage().Write(&b)
	if !bytes.Equal(a.Bytes(), b.Bytes()) || ba.ID() != bb.ID() || ba.Manifest.Digest != bb.Manifest.Digest {
		t.Errorf("two writes of the same image differ (IDs %s, %s)", ba.ID(), bb.ID())
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Image)
		want string
	}{
		{"no domain", func(i *Image) { i.Name = "pause:v1" }, "DOMAIN/PATH:TAG"},
		{"no tag", func(i *Image) { i.Name = "localhost/pause" }, "DOMAIN/PATH:TAG"},
		{"docker hub short name", func(i *Image) { i.Name = "vnetcni/pause:v1" }, "not a registry domain"},
		{"upper case", func(i *Image) { i.Name = "localhost/Pause:v1" }, "lower-case"},
		{"no entrypoint", func(i *Image) { i.Entrypoint = nil }, "entrypoint"},
		{"no files", func(i *Image) { i.Files = nil }, "no files"},
		{"escaping path", func(i *Image) { i.Files[0].Path = "../x" }, ""},
		{"root", func(i *Image) { i.Files[0].Path = "/" }, "names the root"},
		{"duplicate", func(i *Image) { i.Files = append(i.Files, File{Path: "bin/pause"}) }, "twice"},
	}
	for _, c := range cases {
		img := testImage()
		img.Files = append([]File(nil), img.Files...)
		c.edit(&img)
		err := img.Validate()
		if c.want == "" {
			// path.Clean keeps "../x" inside the image as "x".
			if err != nil {
				t.Errorf("%s: %v, want it accepted (cleaned into the image)", c.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
		}
	}
}

// TestBaseLayer: a base layer goes below the files' layer, in the manifest,
// the config's diff IDs and the docker archive alike; links are links.
func TestBaseLayer(t *testing.T) {
	var base bytes.Buffer
	tw := tar.NewWriter(&base)
	if err := writeFile(tw, "bin/sh", 0o755, []byte("#!sh")); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	img := Image{Name: "registry.k8s.io/e2e-test-images/busybox:1.0", Cmd: []string{"sh"}, Base: base.Bytes(),
		Files: []File{{Path: "/bin/ls", Link: "busybox"}}, Arch: "amd64"}
	var buf bytes.Buffer
	built, err := img.Write(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if built.Base == nil {
		t.Fatal("Built.Base is nil, want the base layer's descriptor")
	}
	files := readTar(t, buf.Bytes())
	var man manifest
	if err := json.Unmarshal(files[blobPath(built.Manifest)], &man); err != nil {
		t.Fatal(err)
	}
	var cfg config
	if err := json.Unmarshal(files[blobPath(built.Config)], &cfg); err != nil {
		t.Fatal(err)
	}
	var dm []dockerManifest
	if err := json.Unmarshal(files["manifest.json"], &dm); err != nil {
		t.Fatal(err)
	}
	wantLayers := []string{built.Base.Digest, built.Layer.Digest}
	var gotLayers []string
	for _, l := range man.Layers {
		gotLayers = append(gotLayers, l.Digest)
	}
	if d := cmp.Diff(wantLayers, gotLayers); d != "" {
		t.Errorf("manifest layers (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantLayers, cfg.RootFS.DiffIDs); d != "" {
		t.Errorf("config diff IDs (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{blobPath(*built.Base), blobPath(built.Layer)}, dm[0].Layers); d != "" {
		t.Errorf("manifest.json layers (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"sh"}, cfg.Config.Cmd); d != "" || len(cfg.Config.Entrypoint) != 0 {
		t.Errorf("config Cmd %v Entrypoint %v, want [sh] and none", cfg.Config.Cmd, cfg.Config.Entrypoint)
	}
	tr := tar.NewReader(bytes.NewReader(files[blobPath(built.Layer)]))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no bin/ls in the files' layer: %v", err)
		}
		if h.Name == "bin/ls" {
			if h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
				t.Errorf("bin/ls: type %c link %q, want a symlink to busybox", h.Typeflag, h.Linkname)
			}
			break
		}
	}
}
