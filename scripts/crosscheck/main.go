// Command crosscheck type-checks packages, with every dependency down to
// the standard library, for other operating systems and architectures
// without compiling them. See scripts/test.sh for why.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// listed is the part of `go list -json` output crosscheck reads.
type listed struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	CgoFiles   []string
	Imports    []string
	ImportMap  map[string]string
	Standard   bool
	Error      *struct{ Err string }
	DepsErrors []*struct{ Err string }
}

func main() {
	targets := flag.String("targets", "linux/amd64", "comma-separated GOOS/GOARCH pairs")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: crosscheck [-targets GOOS/GOARCH,...] PACKAGES")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	failed := false
	for _, t := range strings.Split(*targets, ",") {
		goos, goarch, ok := strings.Cut(t, "/")
		if !ok {
			fmt.Fprintf(os.Stderr, "crosscheck: target %q is not GOOS/GOARCH\n", t)
			os.Exit(2)
		}
		if err := check(goos, goarch, flag.Args()); err != nil {
			fmt.Fprintf(os.Stderr, "crosscheck: %s/%s: %v\n", goos, goarch, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

// check type-checks pkgs and their dependencies for goos/goarch.
func check(goos, goarch string, pkgs []string) error {
	list, err := goList(goos, goarch, pkgs)
	if err != nil {
		return err
	}
	sizes := types.SizesFor("gc", goarch)
	if sizes == nil {
		return fmt.Errorf("unknown architecture %q", goarch)
	}
	fset := token.NewFileSet()
	done := map[string]*types.Package{"unsafe": types.Unsafe}
	var errs []error
	for _, p := range list {
		if p.ImportPath == "unsafe" {
			continue
		}
		if p.Error != nil {
			errs = append(errs, fmt.Errorf("%s: %s", p.ImportPath, p.Error.Err))
			continue
		}
		if len(p.CgoFiles) > 0 {
			// CGO_ENABLED=0 should have left these out: a package
			// that needs cgo cannot be cross-compiled here.
			errs = append(errs, fmt.Errorf("%s needs cgo", p.ImportPath))
			continue
		}
		tp, perr := checkOne(fset, sizes, p, done)
		done[p.ImportPath] = tp
		if perr != nil {
			errs = append(errs, perr)
		}
	}
	return errors.Join(errs...)
}

// goList lists pkgs and their dependencies, dependencies first.
func goList(goos, goarch string, pkgs []string) ([]*listed, error) {
	cmd := exec.Command("go", append([]string{"list", "-e", "-deps", "-json=ImportPath,Dir,GoFiles,CgoFiles,Imports,ImportMap,Standard,Error,DepsErrors"}, pkgs...)...)
	cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0", "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %v: %s", err, stderr.String())
	}
	var list []*listed
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(listed)
		if err := dec.Decode(p); err == io.EOF {
			return list, nil
		} else if err != nil {
			return nil, fmt.Errorf("go list output: %w", err)
		}
		list = append(list, p)
	}
}

// checkOne parses and type-checks one package whose dependencies are in
// done.
func checkOne(fset *token.FileSet, sizes types.Sizes, p *listed, done map[string]*types.Package) (*types.Package, error) {
	files := make([]*ast.File, len(p.GoFiles))
	var wg sync.WaitGroup
	perr := make([]error, len(p.GoFiles))
	for i, name := range p.GoFiles {
		wg.Go(func() {
			files[i], perr[i] = parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.SkipObjectResolution)
		})
	}
	wg.Wait()
	if err := errors.Join(perr...); err != nil {
		return nil, err
	}
	var first []error
	conf := types.Config{
		Importer: importerFunc(func(path string) (*types.Package, error) {
			if m, ok := p.ImportMap[path]; ok {
				path = m
			}
			if tp := done[path]; tp != nil {
				return tp, nil
			}
			return nil, fmt.Errorf("%s not checked (it failed)", path)
		}),
		Sizes: sizes,
		Error: func(err error) {
			if len(first) < 10 {
				first = append(first, err)
			}
		},
	}
	tp, _ := conf.Check(p.ImportPath, fset, files, nil)
	return tp, errors.Join(first...)
}

type importerFunc func(path string) (*types.Package, error)

func (f importerFunc) Import(path string) (*types.Package, error) { return f(path) }
