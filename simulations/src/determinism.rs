//! The link between the library and the randomness interposer, which only the `shoal-sim`
//! binary contains: the binary installs its reseed function, and every run reseeds it from
//! the run's seed before anything else happens on the run's thread.

use std::sync::OnceLock;

static RESEED: OnceLock<fn(u64)> = OnceLock::new();

/// Called once by the binary, after its self-check passed.
pub fn install(reseed: fn(u64)) {
    let _ = RESEED.set(reseed);
}

/// Whether the interposer is in effect in this process.
pub fn installed() -> bool {
    RESEED.get().is_some()
}

/// Restarts OS-level randomness from `seed` (a no-op without the interposer).
pub fn reseed(seed: u64) {
    if let Some(f) = RESEED.get() {
        f(seed);
    }
}
