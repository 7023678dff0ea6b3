package harness

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/roost-mqtt/roost/internal/clustertest"
)

// PublishOnce publishes p on c within 12 s and returns the reason code of
// its acknowledgement, or closed true when the server closed the
// connection instead (outcome unknown). Unlike TryPublish it returns an
// error instead of failing a test, for a goroutine of its own.
func PublishOnce(c *Client, p *paho.Publish) (rc byte, closed bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, p)
	if r != nil {
		return r.ReasonCode, false, nil // paho reports failure codes as errors too
	}
	select {
	case <-c.Done():
		return 0, true, nil
	default:
	}
	return 0, false, fmt.Errorf("%s: publish %q: %w", c.ID, p.Topic, err)
}

// RedialPub connects a clean publisher with id to nd again, retrying
// for up to 20 s (a CONNECT may be refused while a leader is elected);
// it returns an error instead of failing a test.
func RedialPub(t *testing.T, nd *Node, id string) (*Client, error) {
	var last error
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		c, ack, err := clustertest.Dial(t, nd.MQTT, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
		if err == nil && ack.ReasonCode == 0 {
			return WrapClient(c), nil
		}
		if err == nil {
			err = fmt.Errorf("CONNACK 0x%02X", ack.ReasonCode)
		}
		last = err
	}
	return nil, fmt.Errorf("publisher %s on %s: %w", id, nd.Name, last)
}
