package cluster

// RoutePassword is routePassword, for the process tests to look for it in
// the nodes' logs.
var RoutePassword = routePassword
