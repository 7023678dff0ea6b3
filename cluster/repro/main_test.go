package repro_test

import (
	"testing"

	"github.com/roost-mqtt/roost/cluster/internal/harness"
)

func TestMain(m *testing.M) { harness.Main(m, harness.ReproLanes) }
