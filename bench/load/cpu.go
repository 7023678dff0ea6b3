package load

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc/PID/stat times: USER_HZ, which Linux
// fixes at 100 on every architecture Go supports.
const clockTick = 10 * time.Millisecond

// procCPU is the CPU time process pid has used, from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces; fields after its
	// closing parenthesis start at field 3 (state); utime and stime are
	// fields 14 and 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("load: short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("load: bad /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// cpuMeter measures the CPU use of this process and of the broker over an
// interval, as cores busy (1.0 = one core all the time).
type cpuMeter struct {
	pid          int
	at           time.Time
	self, broker time.Duration
}

func startCPU(pid int) cpuMeter {
	m := cpuMeter{pid: pid, at: time.Now(), self: selfCPU()}
	if pid > 0 {
		m.broker, _ = procCPU(pid)
	}
	return m
}

// stop returns the cores busy since start; broker is 0 when unknown.
func (m cpuMeter) stop() (self, broker float64) {
	el := time.Since(m.at).Seconds()
	if el <= 0 {
		return 0, 0
	}
	self = (selfCPU() - m.self).Seconds() / el
	if m.pid > 0 {
		if b, err := procCPU(m.pid); err == nil {
			broker = (b - m.broker).Seconds() / el
		}
	}
	return self, broker
}
