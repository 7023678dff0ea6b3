package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/roost-mqtt/roost/auth"
)

const passwdHelp = `Adds, changes or deletes a user in a password file for auth.password_file,
like mosquitto_passwd:

	roost passwd FILE USER            prompt for the password (twice, no echo)
	roost passwd -c FILE USER         create FILE (replacing it), then prompt
	roost passwd -b FILE USER PASS    batch mode: the password is an argument
	roost passwd -D FILE USER         delete USER

When standard input is not a terminal the password is its first line, so
scripts can pipe it in without it showing in the process list. The file is
replaced atomically (a running broker reloads it and never sees half of
it) and left with mode 0600. Entries are Argon2id unless -H says otherwise;
-H sha512-pbkdf2 writes mosquitto's $7$ form, which mosquitto reads too.`

func runPasswd(_ context.Context, args []string, std stdio) int {
	stdout, stderr := std.out, std.err
	flags := newFlagSet("passwd", " FILE USER [PASSWORD]", passwdHelp, stderr)
	create := flags.Bool("c", false, "create the file, replacing any existing one")
	batch := flags.Bool("b", false, "batch mode: take the password from the command line")
	del := flags.Bool("D", false, "delete the user")
	scheme := flags.String("H", string(auth.Argon2id), "hash `scheme`: argon2id, bcrypt or sha512-pbkdf2")
	if err := flags.Parse(args); errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	want := 2
	if *batch {
		want = 3
	}
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "roost passwd: %s\n", msg)
		flags.Usage()
		return 2
	}
	switch {
	case flags.NArg() != want:
		return usage(fmt.Sprintf("want %d arguments, got %d", want, flags.NArg()))
	case *del && (*create || *batch):
		return usage("-D goes alone")
	}
	file, user := flags.Arg(0), flags.Arg(1)
	if *del {
		if err := auth.DeleteUser(file, user); err != nil {
			fmt.Fprintf(stderr, "roost passwd: %v\n", err)
			return 1
		}
		return 0
	}
	if err := auth.ValidUsername(user); err != nil {
		return usage(err.Error())
	}
	if !*create {
		if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "roost passwd: %s does not exist (use -c to create it)\n", file)
			return 1
		}
	}
	var pw []byte
	if *batch {
		pw = []byte(flags.Arg(2))
	} else {
		var err error
		if pw, err = readPassword(std.in, stdout); err != nil {
			fmt.Fprintf(stderr, "roost passwd: %v\n", err)
			return 1
		}
	}
	if len(pw) == 0 {
		// The broker never accepts an empty password (docs/security.md):
		// such an entry could not be used.
		fmt.Fprintln(stderr, "roost passwd: the password must not be empty: Roost refuses empty passwords at CONNECT")
		return 2
	}
	h, err := auth.Hash(auth.Scheme(*scheme), pw)
	if err != nil {
		fmt.Fprintf(stderr, "roost passwd: %v\n", err)
		return 2
	}
	if err := auth.SetUser(file, user, h, *create); err != nil {
		fmt.Fprintf(stderr, "roost passwd: %v\n", err)
		return 1
	}
	return 0
}

// readPassword prompts twice without echo on a terminal, or reads the
// first line of a pipe.
func readPassword(in io.Reader, prompt io.Writer) ([]byte, error) {
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(prompt, "Password: ")
		pw, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, err
		}
		fmt.Fprint(prompt, "Reenter password: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, err
		}
		if string(pw) != string(again) {
			return nil, errors.New("passwords do not match")
		}
		return pw, nil
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return nil, fmt.Errorf("reading the password from standard input: %w", err)
	}
	return []byte(strings.TrimRight(line, "\r\n")), nil
}
