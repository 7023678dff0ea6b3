package topic

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Validation errors. Functions return them directly or wrapped with %w, so
// callers test with errors.Is.
var (
	// ErrEmpty: a topic name or filter must be at least one character long [MQTT-4.7.3-1].
	ErrEmpty = errors.New("topic: empty")
	// ErrWildcardInName: a topic name must not contain '+' or '#' [MQTT-3.3.2-2].
	ErrWildcardInName = errors.New("topic: wildcard in topic name")
	// ErrBadWildcard: '#' must be the whole last level [MQTT-4.7.1-1]; '+' must be a whole level [MQTT-4.7.1-2].
	ErrBadWildcard = errors.New("topic: wildcard not a whole level")
	// ErrNullChar: U+0000 is not allowed in a UTF-8 string [MQTT-1.5.4-2], [MQTT-4.7.3-2].
	ErrNullChar = errors.New("topic: contains U+0000")
	// ErrBadUTF8: the string is not well-formed UTF-8 [MQTT-1.5.4-1].
	ErrBadUTF8 = errors.New("topic: invalid UTF-8")
	// ErrTooLong: a topic name or filter is at most 65535 bytes [MQTT-4.7.3-3].
	ErrTooLong = errors.New("topic: longer than 65535 bytes")
	// ErrTooManyLevels: more levels than the broker's configured limit.
	ErrTooManyLevels = errors.New("topic: too many levels")
	// ErrBadShare: a "$share/" filter without a valid ShareName and filter [MQTT-4.8.2-1], [MQTT-4.8.2-2].
	ErrBadShare = errors.New("topic: invalid shared subscription")
)

// maxLen is the longest UTF-8 encoded string MQTT can carry [MQTT-4.7.3-3].
const maxLen = 65535

// sharePrefix starts every shared subscription filter [MQTT-4.8.2].
const sharePrefix = "$share/"

// ValidName checks a topic name as used in PUBLISH or as a will topic. It
// returns nil or the first violation found: ErrEmpty, ErrTooLong,
// ErrWildcardInName, ErrNullChar, ErrBadUTF8 or ErrTooManyLevels (the last
// wrapped with the level count). maxLevels <= 0 means no level limit.
func ValidName(name string, maxLevels int) error {
	if err := checkLength(name); err != nil {
		return err
	}
	levels, ascii := 1, true
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '+' || c == '#':
			return ErrWildcardInName // [MQTT-3.3.2-2]
		case c == 0:
			return ErrNullChar // [MQTT-1.5.4-2]
		case c == '/':
			levels++
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return checkRest(name, ascii, levels, maxLevels)
}

// ValidFilter checks a topic filter from SUBSCRIBE or UNSUBSCRIBE. A filter
// starting with "$share/" is checked as a shared subscription (see
// ParseShare) and its levels are counted after the ShareName. It returns nil
// or the first violation found: ErrEmpty, ErrTooLong, ErrBadShare (wrapping
// the cause when the filter part is invalid), ErrBadWildcard, ErrNullChar,
// ErrBadUTF8 or ErrTooManyLevels. maxLevels <= 0 means no level limit.
func ValidFilter(filter string, maxLevels int) error {
	if err := checkLength(filter); err != nil {
		return err
	}
	_, rest, shared, err := ParseShare(filter)
	if err != nil {
		return err
	}
	if shared {
		// ParseShare validated rest without a level limit.
		if n := strings.Count(rest, "/") + 1; maxLevels > 0 && n > maxLevels {
			return tooManyLevels(n, maxLevels)
		}
		return nil
	}
	return checkFilter(filter, maxLevels)
}

// ParseShare splits a shared subscription filter "$share/{ShareName}/{filter}"
// [MQTT-4.8.2]. For a filter that does not start with "$share/" it returns
// shared=false, rest=filter and a nil error. Otherwise shared is true and err
// is ErrBadShare (wrapping the cause, if the filter part is invalid) when the
// ShareName is empty [MQTT-4.8.2-1], contains '/', '+' or '#' [MQTT-4.8.2-2],
// or is not followed by '/' and a non-empty valid filter.
func ParseShare(filter string) (group, rest string, shared bool, err error) {
	after, ok := strings.CutPrefix(filter, sharePrefix)
	if !ok {
		return "", filter, false, nil
	}
	group, rest, ok = strings.Cut(after, "/")
	switch {
	case !ok:
		return "", "", true, fmt.Errorf("%w: no filter after ShareName", ErrBadShare)
	case group == "":
		return "", "", true, fmt.Errorf("%w: empty ShareName", ErrBadShare) // [MQTT-4.8.2-1]
	case strings.ContainsAny(group, "+#"):
		return "", "", true, fmt.Errorf("%w: wildcard in ShareName", ErrBadShare) // [MQTT-4.8.2-2]
	case rest == "":
		return "", "", true, fmt.Errorf("%w: empty filter", ErrBadShare)
	}
	if err := checkFilter(group, 0); err != nil {
		return "", "", true, fmt.Errorf("%w: ShareName: %w", ErrBadShare, err)
	}
	if err := checkFilter(rest, 0); err != nil {
		return "", "", true, fmt.Errorf("%w: %w", ErrBadShare, err)
	}
	return group, rest, true, nil
}

// checkFilter applies the filter rules to a plain (non-shared) filter.
func checkFilter(filter string, maxLevels int) error {
	if err := checkLength(filter); err != nil {
		return err
	}
	levels, ascii := 1, true
	last := len(filter) - 1
	for i := 0; i < len(filter); i++ {
		switch c := filter[i]; {
		case c == '+':
			// [MQTT-4.7.1-2] '+' occupies an entire level.
			if (i > 0 && filter[i-1] != '/') || (i < last && filter[i+1] != '/') {
				return ErrBadWildcard
			}
		case c == '#':
			// [MQTT-4.7.1-1] '#' is alone in its level and that level is the last.
			if (i > 0 && filter[i-1] != '/') || i != last {
				return ErrBadWildcard
			}
		case c == 0:
			return ErrNullChar // [MQTT-4.7.3-2]
		case c == '/':
			levels++
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return checkRest(filter, ascii, levels, maxLevels)
}

func checkLength(s string) error {
	switch {
	case s == "":
		return ErrEmpty // [MQTT-4.7.3-1]
	case len(s) > maxLen:
		return ErrTooLong // [MQTT-4.7.3-3]
	}
	return nil
}

// checkRest finishes a byte scan: UTF-8 is decoded only when a non-ASCII
// byte was seen, so the common ASCII topic is scanned once.
func checkRest(s string, ascii bool, levels, maxLevels int) error {
	if !ascii && !utf8.ValidString(s) {
		return ErrBadUTF8 // [MQTT-1.5.4-1]
	}
	if maxLevels > 0 && levels > maxLevels {
		return tooManyLevels(levels, maxLevels)
	}
	return nil
}

func tooManyLevels(n, limit int) error {
	return fmt.Errorf("%w: %d levels, limit %d", ErrTooManyLevels, n, limit)
}
