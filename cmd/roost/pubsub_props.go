package main

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/roost-mqtt/roost/client"
	"github.com/roost-mqtt/roost/packet"
)

// dprops are the MQTT 5 properties given with -D (or --property), per
// packet, as mosquitto_pub and mosquitto_sub take them:
// -D command identifier value, and -D command user-property name value.
// With -V 311 they are an error: 3.1.1 has no properties, and mosquitto's
// tools either switch to MQTT 5 or silently send nothing, depending on
// whether -D comes after -V or before.
type dprops struct {
	connect, publish, will, subscribe, unsubscribe, disconnect packet.Properties
	// topicAlias is set by -D publish topic-alias N: the client's own
	// topic aliases are turned on (it picks the numbers, up to the
	// server's Topic Alias Maximum) rather than sending N as given.
	topicAlias bool
}

// propKind is how a property's value is written on the command line.
type propKind int

const (
	kindByte propKind = iota
	kindU16
	kindU32
	kindVarint
	kindString
	kindBinary
	kindPair // user-property: name and value
)

// propSpec describes one property by its mosquitto name: its identifier,
// its value, and the commands the client may send it in (MQTT 5 section
// 2.2.2.2). unsupported, when set, says why Roost's tools do not send it
// although the specification would allow it.
type propSpec struct {
	id          packet.PropID
	kind        propKind
	commands    []string
	unsupported string
}

const noAuth = "enhanced authentication (AUTH) is not supported"

// lookupProp returns the specification of the property named name.
func lookupProp(name string) (propSpec, bool) {
	pubWill := []string{"publish", "will"}
	all := []string{"connect", "publish", "will", "subscribe", "unsubscribe", "disconnect", "auth", "puback", "pubrec", "pubrel", "pubcomp"}
	server := []string{} // sent by servers only (CONNACK)
	specs := map[string]propSpec{
		"payload-format-indicator":          {packet.PropPayloadFormat, kindByte, pubWill, ""},
		"message-expiry-interval":           {packet.PropMessageExpiry, kindU32, pubWill, ""},
		"content-type":                      {packet.PropContentType, kindString, pubWill, ""},
		"response-topic":                    {packet.PropResponseTopic, kindString, pubWill, ""},
		"correlation-data":                  {packet.PropCorrelationData, kindBinary, pubWill, ""},
		"subscription-identifier":           {packet.PropSubscriptionID, kindVarint, []string{"subscribe"}, ""},
		"session-expiry-interval":           {packet.PropSessionExpiry, kindU32, []string{"connect", "disconnect"}, ""},
		"assigned-client-identifier":        {packet.PropAssignedClientID, kindString, server, ""},
		"server-keep-alive":                 {packet.PropServerKeepAlive, kindU16, server, ""},
		"authentication-method":             {packet.PropAuthMethod, kindString, []string{"connect", "auth"}, noAuth},
		"authentication-data":               {packet.PropAuthData, kindBinary, []string{"connect", "auth"}, noAuth},
		"request-problem-information":       {packet.PropRequestProblemInfo, kindByte, []string{"connect"}, ""},
		"will-delay-interval":               {packet.PropWillDelay, kindU32, []string{"will"}, ""},
		"request-response-information":      {packet.PropRequestResponseInfo, kindByte, []string{"connect"}, ""},
		"response-information":              {packet.PropResponseInfo, kindString, server, ""},
		"server-reference":                  {packet.PropServerReference, kindString, server, ""},
		"reason-string":                     {packet.PropReasonString, kindString, []string{"disconnect", "puback", "pubrec", "pubrel", "pubcomp", "auth"}, ""},
		"receive-maximum":                   {packet.PropReceiveMaximum, kindU16, []string{"connect"}, ""},
		"topic-alias-maximum":               {packet.PropTopicAliasMaximum, kindU16, []string{"connect"}, ""},
		"topic-alias":                       {packet.PropTopicAlias, kindU16, []string{"publish"}, ""},
		"maximum-qos":                       {packet.PropMaximumQoS, kindByte, server, ""},
		"retain-available":                  {packet.PropRetainAvailable, kindByte, server, ""},
		"user-property":                     {packet.PropUserProperty, kindPair, all, ""},
		"maximum-packet-size":               {packet.PropMaximumPacketSize, kindU32, []string{"connect"}, ""},
		"wildcard-subscription-available":   {packet.PropWildcardSubAvailable, kindByte, server, ""},
		"subscription-identifier-available": {packet.PropSubIDAvailable, kindByte, server, ""},
		"shared-subscription-available":     {packet.PropSharedSubAvailable, kindByte, server, ""},
	}
	s, ok := specs[name]
	return s, ok
}

// target returns the properties -D cmd sets, or an error for a command
// that is not an MQTT packet or that these tools never send with
// properties of the user's choosing.
func (d *dprops) target(cmd string) (*packet.Properties, error) {
	switch cmd {
	case "connect":
		return &d.connect, nil
	case "publish":
		return &d.publish, nil
	case "will":
		return &d.will, nil
	case "subscribe":
		return &d.subscribe, nil
	case "unsubscribe":
		return &d.unsubscribe, nil
	case "disconnect":
		return &d.disconnect, nil
	case "auth", "puback", "pubrec", "pubrel", "pubcomp":
		return nil, fmt.Errorf("properties for %s are not supported: roost sends acknowledgements without properties and does no enhanced authentication", cmd)
	}
	return nil, errors.New("Invalid command given in --property argument.")
}

// extract removes every "-D command identifier value" (and --property)
// from args and records it; the flag package cannot take a flag with
// three or four values.
func (d *dprops) extract(args []string) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a != "-D" && a != "--property" && a != "-property" {
			rest = append(rest, a)
			if a == "--" {
				return append(rest, args[i+1:]...), nil
			}
			continue
		}
		n, err := d.add(args[i+1:])
		if err != nil {
			return nil, err
		}
		i += n
	}
	return rest, nil
}

// add records one property from args (what follows -D) and returns how
// many arguments it took.
func (d *dprops) add(args []string) (int, error) {
	if len(args) < 3 {
		return 0, errors.New("--property argument given but not enough arguments specified.")
	}
	cmd, name, val := args[0], args[1], args[2]
	p, err := d.target(cmd)
	if err != nil {
		return 0, err
	}
	spec, ok := lookupProp(name)
	if !ok {
		return 0, fmt.Errorf("Invalid property name %q given in --property argument.", name)
	}
	if !slices.Contains(spec.commands, cmd) {
		return 0, fmt.Errorf("%s property not allowed for %s in --property argument.", name, cmd)
	}
	if spec.unsupported != "" {
		return 0, fmt.Errorf("%s property not supported for %s in --property argument: %s.", name, cmd, spec.unsupported)
	}
	if spec.kind == kindPair {
		if len(args) < 4 {
			return 0, errors.New("--property argument given but not enough arguments specified.")
		}
		p.User = append(p.User, packet.UserProperty{Key: val, Value: args[3]})
		return 4, nil
	}
	if err := setProp(p, spec, val); err != nil {
		return 0, fmt.Errorf("-D %s %s: %w", cmd, name, err)
	}
	if spec.id == packet.PropTopicAlias {
		d.topicAlias = true
		p.Clear(packet.PropTopicAlias)
	}
	return 3, nil
}

// setProp sets one property's value from its command-line text.
func setProp(p *packet.Properties, spec propSpec, val string) error {
	num := func(max uint64) (uint64, error) {
		n, err := strconv.ParseUint(val, 10, 64)
		if err != nil || n > max {
			return 0, fmt.Errorf("%q is not a number from 0 to %d", val, max)
		}
		return n, nil
	}
	var n uint64
	var err error
	switch spec.kind {
	case kindByte:
		n, err = num(0xFF)
	case kindU16:
		n, err = num(0xFFFF)
	case kindU32:
		n, err = num(0xFFFFFFFF)
	case kindVarint:
		if n, err = num(uint64(packet.MaxVarint)); err == nil && n == 0 {
			err = errors.New("must not be 0")
		}
	}
	if err != nil {
		return err
	}
	if spec.id != packet.PropSubscriptionID {
		p.Set(spec.id)
	}
	switch spec.id {
	case packet.PropPayloadFormat:
		p.PayloadFormat = byte(n)
	case packet.PropMessageExpiry:
		p.MessageExpiry = uint32(n)
	case packet.PropContentType:
		p.ContentType = val
	case packet.PropResponseTopic:
		p.ResponseTopic = val
	case packet.PropCorrelationData:
		p.CorrelationData = []byte(val)
	case packet.PropSubscriptionID:
		p.SubscriptionIDs = []uint32{uint32(n)}
	case packet.PropSessionExpiry:
		p.SessionExpiry = uint32(n)
	case packet.PropRequestProblemInfo:
		p.RequestProblemInfo = byte(n)
	case packet.PropWillDelay:
		p.WillDelay = uint32(n)
	case packet.PropRequestResponseInfo:
		p.RequestResponseInfo = byte(n)
	case packet.PropReasonString:
		p.ReasonString = val
	case packet.PropReceiveMaximum:
		p.ReceiveMaximum = uint16(n)
	case packet.PropTopicAliasMaximum:
		p.TopicAliasMaximum = uint16(n)
	case packet.PropTopicAlias:
		p.TopicAlias = uint16(n)
	case packet.PropMaximumPacketSize:
		p.MaximumPacketSize = uint32(n)
	}
	return nil
}

// applyConnect moves the CONNECT properties that client.Options has
// fields for into them, so the client acts on them (it enforces its
// Maximum Packet Size on what it reads, for one), and the rest into
// ConnectProperties.
func (d *dprops) applyConnect(o *client.Options) error {
	p := d.connect
	if p.Has(packet.PropSessionExpiry) {
		o.SessionExpiry = time.Duration(p.SessionExpiry) * time.Second
		p.Clear(packet.PropSessionExpiry)
	}
	if p.Has(packet.PropReceiveMaximum) {
		if p.ReceiveMaximum == 0 {
			return errors.New("-D connect receive-maximum: 0 is a protocol error (MQTT 5 section 3.1.2.11.3)")
		}
		o.ReceiveMaximum = p.ReceiveMaximum
		p.Clear(packet.PropReceiveMaximum)
	}
	if p.Has(packet.PropMaximumPacketSize) {
		if p.MaximumPacketSize == 0 {
			return errors.New("-D connect maximum-packet-size: 0 is a protocol error (MQTT 5 section 3.1.2.11.4)")
		}
		o.MaxPacketSize = p.MaximumPacketSize
		p.Clear(packet.PropMaximumPacketSize)
	}
	if p.Has(packet.PropTopicAliasMaximum) {
		o.TopicAliasMaximum = p.TopicAliasMaximum
		p.Clear(packet.PropTopicAliasMaximum)
	}
	o.ConnectProperties = p
	o.TopicAliases = o.TopicAliases || d.topicAlias
	return nil
}

// any reports whether any -D property was given.
func (d *dprops) any() bool {
	return d.topicAlias || !empty(&d.connect) || !empty(&d.publish) || !empty(&d.will) ||
		!empty(&d.subscribe) || !empty(&d.unsubscribe) || !empty(&d.disconnect)
}

// empty reports whether p has no property at all.
func empty(p *packet.Properties) bool {
	return p.Present == 0 && len(p.User) == 0 && len(p.SubscriptionIDs) == 0
}
