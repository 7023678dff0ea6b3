package bridgeset

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/roost-mqtt/roost/bridge"
	"github.com/roost-mqtt/roost/httpapi"
	"github.com/roost-mqtt/roost/internal/config"
)

// The admin API's side of Set (httpapi.BridgeAdmin): bridges added,
// changed and removed without a restart, and kept in APIBridgesFile.

var _ httpapi.BridgeAdmin = (*Set)(nil)

// BridgeConfig implements httpapi.BridgeAdmin.
func (s *Set) BridgeConfig(name string) (httpapi.BridgeEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := s.apiIndex(name); i >= 0 {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(s.api[i].raw, &m); err != nil {
			return httpapi.BridgeEntry{}, err
		}
		_, pw := m["password"]
		delete(m, "password")
		raw, err := json.Marshal(m)
		return httpapi.BridgeEntry{Source: "api", Config: raw, HasPassword: pw}, err
	}
	for _, f := range s.file {
		if f.Name == name {
			raw, err := json.Marshal(fileBridgeJSON(f))
			return httpapi.BridgeEntry{Source: "file", Config: raw, HasPassword: f.Password != ""}, err
		}
	}
	return httpapi.BridgeEntry{}, fmt.Errorf("bridge %q: %w", name, httpapi.ErrBridgeNotFound)
}

// fileBridgeJSON shows the main keys of a file's bridge (not its password).
func fileBridgeJSON(b config.Bridge) map[string]any {
	topics := []string{}
	for _, r := range b.Topics {
		topics = append(topics, r.String())
	}
	return map[string]any{"name": b.Name, "addresses": b.Addresses, "client_id": b.ClientID, "topics": topics}
}

func (s *Set) apiIndex(name string) int {
	return slices.IndexFunc(s.api, func(a apiBridge) bool { return a.cfg.Name == name })
}

// SetBridge implements httpapi.BridgeAdmin. The entry is checked whole
// (keys, TLS files, client ids against the other bridges) before the
// running bridge of that name is touched, and saved before it starts; if
// it then does not start, the old entry is saved and started again.
func (s *Set) SetBridge(ctx context.Context, name string, body []byte, create bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.apiIndex(name)
	if create && (i >= 0 || slices.ContainsFunc(s.file, func(f config.Bridge) bool { return f.Name == name })) {
		return fmt.Errorf("bridge %q: %w", name, httpapi.ErrBridgeExists)
	}
	if i < 0 && slices.ContainsFunc(s.file, func(f config.Bridge) bool { return f.Name == name }) {
		return fmt.Errorf("bridge %q is in the configuration file: change it there and send SIGHUP: %w", name, httpapi.ErrBridgeFromFile)
	}
	raw, err := s.completeBody(name, body, i)
	if err != nil {
		return err
	}
	c, err := config.ParseBridge("body", raw)
	if err != nil {
		return fmt.Errorf("%w: %w", httpapi.ErrBridgeInvalid, err)
	}
	bc, err := s.options(c, nil)
	if err == nil {
		err = bridge.Validate(bc)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", httpapi.ErrBridgeInvalid, err)
	}
	api := slices.Clone(s.api)
	if i >= 0 {
		api[i] = apiBridge{cfg: c, raw: raw}
	} else {
		api = append(api, apiBridge{cfg: c, raw: raw})
	}
	return s.commit(ctx, api, name)
}

// completeBody checks the body's name and gives a changed bridge its old
// password when the body has none, so that an edit need not know it; an
// empty "password" clears it.
func (s *Set) completeBody(name string, body []byte, old int) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%w: want a JSON object: %w", httpapi.ErrBridgeInvalid, err)
	}
	if n, ok := m["name"]; ok {
		var got string
		if json.Unmarshal(n, &got) != nil || got != name {
			return nil, fmt.Errorf("%w: name %s in the body, %q in the URL", httpapi.ErrBridgeInvalid, n, name)
		}
	}
	m["name"], _ = json.Marshal(name)
	if _, ok := m["password"]; !ok && old >= 0 && s.api[old].cfg.Password != "" {
		m["password"], _ = json.Marshal(s.api[old].cfg.Password)
	}
	return json.Marshal(m)
}

// DeleteBridge implements httpapi.BridgeAdmin.
func (s *Set) DeleteBridge(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.apiIndex(name)
	if i < 0 {
		if slices.ContainsFunc(s.file, func(f config.Bridge) bool { return f.Name == name }) {
			return fmt.Errorf("bridge %q is in the configuration file: remove it there and send SIGHUP: %w", name, httpapi.ErrBridgeFromFile)
		}
		return fmt.Errorf("bridge %q: %w", name, httpapi.ErrBridgeNotFound)
	}
	return s.commit(ctx, slices.Delete(slices.Clone(s.api), i, i+1), name)
}

// commit saves api and applies it; if the bridge named name does not
// start, it puts the old list back. s.mu is held.
func (s *Set) commit(ctx context.Context, api []apiBridge, name string) error {
	all, err := s.combine(s.file, api)
	if err != nil {
		return fmt.Errorf("%w: %w", httpapi.ErrBridgeInvalid, err)
	}
	if err := s.saveAPIBridges(api); err != nil {
		return err
	}
	old := s.api
	s.api = api
	errs := s.apply(ctx, all)
	if err := errs[name]; err != nil {
		s.api = old
		if serr := s.saveAPIBridges(old); serr != nil {
			s.log.Error("admin API: restoring the saved bridges", "err", serr)
		}
		prev, _ := s.combine(s.file, old)
		for n, err := range s.apply(ctx, prev) {
			s.log.Error("admin API: bridge not restarted", "bridge", n, "err", err)
		}
		return fmt.Errorf("bridge %s did not start, the old settings are back: %w", name, err)
	}
	for n, err := range errs {
		s.log.Error("admin API: bridge not started", "bridge", n, "err", err)
	}
	s.log.Info("admin API: bridges changed", "bridge", name, "bridges", len(s.list))
	return nil
}
