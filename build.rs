//! Rebuilds when a migration is added or changed: `sqlx::migrate!` reads
//! the `migrations` folders at compile time, and cargo does not know it.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
