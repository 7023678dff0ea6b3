package broker

// Store is the persistence seam; the durable implementation arrives with the
// store work. Its full contract is documented in DESIGN.md.
type Store interface {
	Close() error
}
