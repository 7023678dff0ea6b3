// Package main builds on Unix only: syscall.Kill does not exist on Windows.
package main

import (
	"os"
	"syscall"
)

func main() { _ = syscall.Kill(os.Getpid(), 0) }
