package auth

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/roost-mqtt/roost/broker"
	"github.com/roost-mqtt/roost/topic"
)

// ACL is a broker.Authorizer that reads mosquitto's acl_file syntax:
//
//	# comment
//	topic [read|write|readwrite|deny] FILTER    (no keyword: readwrite)
//	user USERNAME
//	pattern [read|write|readwrite|deny] FILTER  (%u username, %c client id)
//
// topic lines before the first user line apply to clients without a
// username; those after "user NAME" to that user. pattern lines apply to
// every client wherever they appear. A client may do what some applicable
// rule allows and no applicable deny rule forbids; everything else is
// denied. Publish needs write, receive needs read, and subscribe needs a
// read rule that some topic matching the filter could pass (see
// docs/security.md for how that differs from mosquitto).
//
// ACL is safe for concurrent use. Reload swaps the rules at once.
type ACL struct {
	// CertIdentityAsUsername makes a client's certificate identity, when
	// it has one, the username the rules see.
	CertIdentityAsUsername bool

	file ruleFile[ruleSet]
}

// access is what a rule grants.
type access uint8

const (
	accRead  access = 1 << iota // receive (and subscribe)
	accWrite                    // publish
)

// rule is one topic or pattern line.
type rule struct {
	filter string // as written; %u/%c not yet substituted
	grant  access // 0 for deny
	user   bool   // contains %u
	subst  bool   // contains %u or %c
}

// rules are one list of rules, deny rules apart so they are checked first.
type rules struct{ deny, allow []rule }

// ruleSet is a parsed file.
type ruleSet struct {
	anon     rules            // topic lines before any user line
	users    map[string]rules // topic lines after "user NAME"
	patterns rules
}

// LoadACLFile reads the ACL file at path. An error names the file and the
// line of the first problem.
func LoadACLFile(path string) (*ACL, error) {
	a := newACL(path)
	return a, a.Reload()
}

// ParseACL parses an ACL file's contents; name prefixes errors.
func ParseACL(name string, data []byte) (*ACL, error) {
	a := newACL(name)
	if err := a.file.set(name, data); err != nil {
		return nil, err
	}
	return a, nil
}

func newACL(path string) *ACL {
	return &ACL{file: ruleFile[ruleSet]{path: path, kind: "acl file", parse: parseACL}}
}

// Path is the file the rules come from.
func (a *ACL) Path() string { return a.file.path }

// Reload rereads the file. On error the rules loaded before stay in force.
func (a *ACL) Reload() error { return a.file.reload() }

// Allow implements broker.Authorizer.
func (a *ACL) Allow(_ context.Context, c *broker.ClientInfo, act broker.Action, name string) bool {
	rs := a.file.load()
	user := Username(c, a.CertIdentityAsUsername)
	own := rs.anon
	if user != "" {
		own = rs.users[user]
	}
	id := ids{user: user, client: c.ClientID}
	switch act {
	case broker.ActionPublish:
		return rs.allowTopic(&own, id, name, accWrite)
	case broker.ActionReceive:
		return rs.allowTopic(&own, id, name, accRead)
	case broker.ActionSubscribe:
		if _, f, shared, err := topic.ParseShare(name); err == nil && shared {
			name = f
		}
		return rs.allowFilter(&own, id, name)
	}
	return false
}

// ids are what %u and %c stand for.
type ids struct{ user, client string }

// patternsApply reports whether pattern rules may grant anything: a
// username or client id with '+' or '#' would turn a pattern into a
// wildcard, so mosquitto (and Roost) give such clients nothing by pattern.
func (id ids) patternsApply() bool {
	return !strings.ContainsAny(id.user, "+#") && !strings.ContainsAny(id.client, "+#")
}

// allowTopic checks a topic name: no applicable deny rule matches it and
// some applicable rule granting want does.
func (rs *ruleSet) allowTopic(own *rules, id ids, name string, want access) bool {
	for i := range own.deny {
		if topic.Match(own.deny[i].filter, name) {
			return false
		}
	}
	for i := range rs.patterns.deny {
		if rs.patterns.deny[i].matches(id, name) {
			return false
		}
	}
	for i := range own.allow {
		if own.allow[i].grant&want != 0 && topic.Match(own.allow[i].filter, name) {
			return true
		}
	}
	if !id.patternsApply() {
		return false
	}
	for i := range rs.patterns.allow {
		if r := &rs.patterns.allow[i]; r.grant&want != 0 && r.matches(id, name) {
			return true
		}
	}
	return false
}

// allowFilter checks a subscription: refused when an applicable deny rule
// covers every topic the filter matches, or when no read rule could let
// any of them through. Deliveries are still checked one by one.
func (rs *ruleSet) allowFilter(own *rules, id ids, filter string) bool {
	for _, r := range own.deny {
		if covers(r.filter, filter) {
			return false
		}
	}
	for _, r := range rs.patterns.deny {
		if f, ok := r.expand(id); ok && covers(f, filter) {
			return false
		}
	}
	for _, r := range own.allow {
		if r.grant&accRead != 0 && overlaps(r.filter, filter) {
			return true
		}
	}
	if !id.patternsApply() {
		return false
	}
	for _, r := range rs.patterns.allow {
		if f, ok := r.expand(id); ok && r.grant&accRead != 0 && overlaps(f, filter) {
			return true
		}
	}
	return false
}

// matches reports whether the pattern rule r, with id substituted, matches
// the topic name. Substitution happens in a stack buffer, so the common
// case does not allocate.
func (r *rule) matches(id ids, name string) bool {
	if !r.subst {
		return topic.Match(r.filter, name)
	}
	if r.user && id.user == "" {
		return false // mosquitto skips %u patterns for clients without a username
	}
	var buf [256]byte
	return matchBytes(r.appendExpanded(buf[:0], id), name)
}

// expand returns r's filter with id substituted, false when the rule does
// not apply to clients without a username.
func (r *rule) expand(id ids) (string, bool) {
	if r.user && id.user == "" {
		return "", false
	}
	if !r.subst {
		return r.filter, true
	}
	return string(r.appendExpanded(nil, id)), true
}

func (r *rule) appendExpanded(b []byte, id ids) []byte {
	f := r.filter
	for {
		i := strings.IndexByte(f, '%')
		if i < 0 || i == len(f)-1 {
			return append(b, f...)
		}
		b = append(b, f[:i]...)
		switch f[i+1] {
		case 'u':
			b = append(b, id.user...)
		case 'c':
			b = append(b, id.client...)
		default:
			b = append(b, f[i:i+2]...)
		}
		f = f[i+2:]
	}
}

// matchBytes is topic.Match for a filter held in a byte slice.
func matchBytes(filter []byte, name string) bool {
	if name != "" && name[0] == '$' && len(filter) > 0 && (filter[0] == '+' || filter[0] == '#') {
		return false // [MQTT-4.7.2-1]
	}
	for {
		fl, frest, fmore := cutBytes(filter)
		if len(fl) == 1 && fl[0] == '#' {
			return true
		}
		nl, nrest, nmore := cutString(name)
		if !(len(fl) == 1 && fl[0] == '+') && string(fl) != nl {
			return false
		}
		switch {
		case !fmore:
			return !nmore
		case !nmore:
			return len(frest) == 1 && frest[0] == '#'
		}
		filter, name = frest, nrest
	}
}

func cutBytes(s []byte) (level, rest []byte, more bool) {
	if i := bytes.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, nil, false
}

func cutString(s string) (level, rest string, more bool) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// overlaps reports whether some topic name matches both filters.
func overlaps(a, b string) bool {
	if dollarConflict(a, b) || dollarConflict(b, a) {
		return false
	}
	for {
		al, arest, amore := cutString(a)
		bl, brest, bmore := cutString(b)
		if al == "#" || bl == "#" {
			return true
		}
		if al != "+" && bl != "+" && al != bl {
			return false
		}
		switch {
		case !amore && !bmore:
			return true
		case !amore:
			return brest == "#" // "a" and "a/#" share the topic "a"
		case !bmore:
			return arest == "#"
		}
		a, b = arest, brest
	}
}

// dollarConflict: a filter starting with a wildcard matches no "$" topic,
// which are the only topics a filter starting with a "$" level matches.
func dollarConflict(a, b string) bool {
	return (strings.HasPrefix(a, "+") || strings.HasPrefix(a, "#")) && strings.HasPrefix(b, "$")
}

// covers reports whether every topic name the filter sub matches is also
// matched by the filter r.
func covers(r, sub string) bool {
	if strings.HasPrefix(sub, "$") != strings.HasPrefix(r, "$") && (strings.HasPrefix(r, "+") || strings.HasPrefix(r, "#")) {
		return false // r's leading wildcard misses sub's "$" topics
	}
	if sub == "#" && r == "+/#" {
		return true // every name has a first level
	}
	for {
		rl, rrest, rmore := cutString(r)
		sl, srest, smore := cutString(sub)
		switch {
		case rl == "#":
			return true
		case sl == "#":
			return false // sub reaches deeper than r goes
		case rl != "+" && (sl == "+" || rl != sl):
			return false
		}
		switch {
		case !rmore && !smore:
			return true
		case !smore:
			return rrest == "#"
		case !rmore:
			return false
		}
		r, sub = rrest, srest
	}
}

// parseACL parses the acl_file syntax; see ACL.
func parseACL(name string, data []byte) (*ruleSet, error) {
	rs := &ruleSet{users: make(map[string]rules)}
	var user string
	inUser := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		word, rest := cutSpace(line)
		switch word {
		case "user":
			if rest == "" {
				return nil, fmt.Errorf("%s:%d: user needs a username", name, n)
			}
			user, inUser = rest, true
		case "topic", "pattern":
			r, err := parseRule(rest)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %s: %w", name, n, word, err)
			}
			switch {
			case word == "pattern":
				rs.patterns.add(r)
			case inUser:
				rs.users[user] = rs.users[user].with(r)
			default:
				rs.anon.add(r)
			}
		default:
			return nil, fmt.Errorf("%s:%d: unknown keyword %q: want topic, user or pattern", name, n, word)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return rs, nil
}

func (rs *rules) add(r rule) { *rs = rs.with(r) }

func (rs rules) with(r rule) rules {
	if r.grant == 0 {
		rs.deny = append(rs.deny, r)
	} else {
		rs.allow = append(rs.allow, r)
	}
	return rs
}

// parseRule parses "[ACCESS] FILTER". As in mosquitto a lone word is the
// filter, and the filter is the rest of the line, spaces included.
func parseRule(s string) (rule, error) {
	var r rule
	word, rest := cutSpace(s)
	switch {
	case word == "":
		return r, fmt.Errorf("missing topic filter")
	case rest == "":
		r.filter, r.grant = word, accRead|accWrite
	default:
		r.filter = rest
		switch word {
		case "read":
			r.grant = accRead
		case "write":
			r.grant = accWrite
		case "readwrite":
			r.grant = accRead | accWrite
		case "deny":
		default:
			return r, fmt.Errorf("unknown access %q: want read, write, readwrite or deny", word)
		}
	}
	if err := topic.ValidFilter(r.filter, 0); err != nil {
		return r, fmt.Errorf("filter %q: %w", r.filter, err)
	}
	r.user = strings.Contains(r.filter, "%u")
	r.subst = r.user || strings.Contains(r.filter, "%c")
	return r, nil
}

// cutSpace splits s at its first run of spaces or tabs.
func cutSpace(s string) (word, rest string) {
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimSpace(s[i:])
}
