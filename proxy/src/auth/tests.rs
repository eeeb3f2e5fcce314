//! Unit tests of `decide`: each method, each failure class, chained auth, IP and path rules.
