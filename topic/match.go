package topic

import "strings"

// Match reports whether the topic name matches the plain (non-shared) filter.
// Neither argument is validated; pass values that ValidName and ValidFilter
// (or ParseShare's rest) accept.
//
// '+' matches exactly one level, which may be empty; '#' matches the parent
// level and any number of child levels, so "a/#" matches "a", "a/" and
// "a/b/c" [MQTT-4.7.1-1]. A name starting with '$' is not matched by a
// filter whose first level is '+' or '#' [MQTT-4.7.2-1].
//
// Match is the reference the Tree and Retained indexes are tested against.
// It does not allocate.
func Match(filter, name string) bool {
	if isDollar(name) && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false // [MQTT-4.7.2-1]
	}
	for {
		fl, frest, fmore := cut(filter)
		if fl == "#" {
			return true
		}
		nl, nrest, nmore := cut(name)
		if fl != "+" && fl != nl {
			return false
		}
		switch {
		case !fmore:
			return !nmore
		case !nmore:
			// The name ran out: only a trailing "#" (parent match) is left to match.
			return frest == "#"
		}
		filter, name = frest, nrest
	}
}

// cut splits s at the first '/': level is the text before it, rest the text
// after it, and more reports whether there was a '/'. It does not allocate,
// which keeps level iteration on the PUBLISH path allocation-free.
func cut(s string) (level, rest string, more bool) {
	i := strings.IndexByte(s, '/')
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

// isDollar reports whether a name (or its first level) starts with '$',
// the prefix reserved for server topics such as $SYS [MQTT-4.7.2-1].
func isDollar(s string) bool {
	return s != "" && s[0] == '$'
}
