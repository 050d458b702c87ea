//! call-router.
