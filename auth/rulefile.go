package auth

import (
	"fmt"
	"os"
	"sync/atomic"
)

// ruleFile is a file of rules parsed into a *T, which reload replaces at
// once: readers holding the old rules finish with them, and a file that
// fails to read or parse leaves the rules loaded before in force. The ACL
// and the password file are each one.
type ruleFile[T any] struct {
	path  string
	kind  string // "acl file", "password file": names read errors
	parse func(name string, data []byte) (*T, error)
	cur   atomic.Pointer[T]
}

// set parses data (name prefixes errors) and makes it the rules.
func (f *ruleFile[T]) set(name string, data []byte) error {
	v, err := f.parse(name, data)
	if err != nil {
		return err
	}
	f.cur.Store(v)
	return nil
}

// reload rereads the file.
func (f *ruleFile[T]) reload() error {
	data, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("%s: %w", f.kind, err)
	}
	return f.set(f.path, data)
}

// load returns the rules in force (nil before the first successful set).
func (f *ruleFile[T]) load() *T { return f.cur.Load() }
