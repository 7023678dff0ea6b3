// Package security tests Roost's authentication and authorization end to
// end: a real broker (broker.New with the auth package's Authenticator and
// ACL) on 127.0.0.1, raw MQTT clients, and password files made by
// mosquitto's own mosquitto_passwd. Run ./scripts/test.sh once to install
// mosquitto; the tests fail rather than skip without it.
package security
