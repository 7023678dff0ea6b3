package auth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrNoUser is returned by DeleteUser for a user the file does not have.
var ErrNoUser = errors.New("no such user")

// ValidUsername reports why user cannot be a password file entry: empty,
// containing ':' (the field separator) or a line break, or surrounded by
// spaces (which the file format trims).
func ValidUsername(user string) error {
	switch {
	case user == "":
		return errors.New("username must not be empty")
	case strings.ContainsAny(user, ":\r\n"):
		return errors.New("username must not contain ':' or a line break")
	case strings.TrimSpace(user) != user:
		return errors.New("username must not start or end with a space")
	}
	return nil
}

// SetUser sets user's entry in the password file at path to hash (from
// Hash), replacing an existing entry in place or appending a new one.
// Other lines, comments included, are kept. With create the file is
// started afresh (as mosquitto_passwd -c does); without it the file must
// exist. The file is replaced atomically and left with mode 0600.
func SetUser(path, user, hash string, create bool) error {
	if err := ValidUsername(user); err != nil {
		return err
	}
	var lines []string
	if !create {
		var err error
		if lines, err = readLines(path); err != nil {
			return err
		}
	}
	entry := user + ":" + hash
	if i := findUser(lines, user); i >= 0 {
		lines[i] = entry
	} else {
		lines = append(lines, entry)
	}
	return writeAtomic(path, lines)
}

// DeleteUser removes user's entry from the password file at path, or
// returns ErrNoUser.
func DeleteUser(path, user string) error {
	lines, err := readLines(path)
	if err != nil {
		return err
	}
	i := findUser(lines, user)
	if i < 0 {
		return fmt.Errorf("%s: %w %q", path, ErrNoUser, user)
	}
	return writeAtomic(path, append(lines[:i], lines[i+1:]...))
}

func readLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := strings.TrimRight(string(data), "\r\n")
	if s == "" {
		return nil, nil
	}
	return strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n"), nil
}

func findUser(lines []string, user string) int {
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if u, _, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(u) == user {
			return i
		}
	}
	return -1
}

// writeAtomic writes lines to a temporary file beside path, syncs it and
// renames it over path, so a reader (the broker reloading) sees the old
// file or the new one, never half of one.
func writeAtomic(path string, lines []string) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if _, err = f.WriteString(b.String()); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
