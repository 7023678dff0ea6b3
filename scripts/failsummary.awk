# Prints each failed test of a go test output with the first lines of what
# it logged (the "file_test.go:N: ..." heads; the node logs the cluster
# tests print with a failure and the other continuation lines are left
# out). scripts/test.sh prints it last: CI's report keeps the head and the
# tail of a long output, and a failed process test's node logs had pushed
# its message out of both (session 31's TestReproOpHeldKilled: its name
# kept, never why it failed).
function flush() { if (fail) { for (i = 1; i <= n; i++) print buf[i]; print "" } fail = 0; n = 0 }
/^[[:space:]]*--- FAIL: / { flush(); fail = 1; buf[++n] = $0; next }
/^[[:space:]]*--- (PASS|SKIP): / || /^(=== |ok |FAIL|PASS$|panic: )/ { flush(); if (/^panic: /) print; next }
fail && n < 20 && /^[[:space:]]+[A-Za-z0-9_.]+\.go:[0-9]+: / { buf[++n] = $0 }
END { flush() }
