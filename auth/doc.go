// Package auth is Roost's authentication and authorization: implementations
// of the broker's two one-method seams, broker.Authenticator (may this
// client connect?) and broker.Authorizer (may it publish, subscribe to or
// receive this topic?).
//
//   - PasswordFile: users and salted slow hashes, one "user:hash" line
//     each. It reads mosquitto_passwd's files ($7$ PBKDF2-SHA512 and the
//     older $6$ salted SHA-512) as well as Argon2id and bcrypt entries, and
//     SetUser / DeleteUser edit such files atomically (`roost passwd`).
//   - ACL: mosquitto's acl_file syntax (user, topic, pattern with %u and
//     %c), compiled so that Allow, called for every PUBLISH and every
//     delivery, runs from memory without allocating in the common case.
//   - Authenticator: anonymous access per listener plus the password file
//     and an optional hook.
//   - HTTPHook: both seams answered by an HTTP service (POST JSON), with a
//     timeout, a TTL cache and fail-closed default.
//   - All: several Authorizers that must all agree.
//   - Watcher: reload password and ACL files on SIGHUP or when they change;
//     a file that fails to parse keeps the rules already loaded.
//
// docs/security.md is the operator's guide, including how Roost differs
// from mosquitto.
package auth
