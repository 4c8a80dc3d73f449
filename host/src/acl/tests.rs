//! Tests for the ACL core.
