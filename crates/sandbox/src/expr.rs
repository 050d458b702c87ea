//! TaskRouter's expression language (placeholder; being written).
