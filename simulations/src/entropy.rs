//! The randomness interposer: `getrandom` and `getentropy` served from the run's seed.
//!
//! Linked into the `shoal-sim` binary only, never into `shoal`: defining these symbols makes
//! std (hash map keys), `rand` (thread RNG, through getrandom 0.4's `dlsym` lookup, hence the
//! exported symbols, see build.rs) and anything else that asks the OS for entropy draw from a
//! deterministic generator. ring draws through a raw syscall and is not covered: its output
//! (TLS randoms, key shares) only changes ciphertext, never sizes or control flow, and
//! ciphertext stays out of the trace.
//!
//! The generator is splitmix64 over one atomic counter: lock-free, so it is safe to call from
//! any thread at any time, including during std's own initialisation.

use std::ffi::{c_int, c_uint, c_void};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static STATE: AtomicU64 = AtomicU64::new(0x5348_4f41_4c20_5349);
static CALLS: AtomicU64 = AtomicU64::new(0);
/// Set by `SHOAL_SIM_NO_INTERPOSER=1`: behave as if the interposer were absent (the real
/// syscall answers), so the self-check can be shown to fail.
static PASS_THROUGH: AtomicBool = AtomicBool::new(false);

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Restarts the generator from `seed`.
pub fn reseed(seed: u64) {
    STATE.store(mix(seed ^ 0x5348_4f41_4c53_494d), Ordering::SeqCst);
}

fn fill(buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        let v = mix(STATE.fetch_add(GAMMA, Ordering::SeqCst).wrapping_add(GAMMA));
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
}

pub fn configure_from_env() {
    if std::env::var_os("SHOAL_SIM_NO_INTERPOSER").is_some_and(|v| v == "1") {
        PASS_THROUGH.store(true, Ordering::SeqCst);
    }
}

/// # Safety
/// Called by C code with a valid buffer of `len` bytes, as getrandom(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getrandom(buf: *mut c_void, len: usize, flags: c_uint) -> isize {
    if PASS_THROUGH.load(Ordering::Relaxed) {
        // SAFETY: forwards the caller's arguments to the real system call.
        return unsafe { libc::syscall(libc::SYS_getrandom, buf, len, flags) as isize };
    }
    CALLS.fetch_add(1, Ordering::Relaxed);
    if len == 0 || buf.is_null() {
        return 0;
    }
    // SAFETY: the caller guarantees `buf` points to `len` writable bytes.
    let slice = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    fill(slice);
    len as isize
}

/// # Safety
/// Called by C code with a valid buffer of `len` bytes, as getentropy(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getentropy(buf: *mut c_void, len: usize) -> c_int {
    if len > 256 {
        // SAFETY: errno is thread-local and always writable.
        unsafe { *libc::__errno_location() = libc::EIO };
        return -1;
    }
    // SAFETY: same contract as getrandom.
    unsafe { getrandom(buf, len, 0) };
    0
}

/// Checks that every route to OS randomness the node stack uses lands here: the getrandom
/// crate (rand's thread RNG), std's hash map keys and rand's thread RNG in a fresh thread.
/// Each is drawn twice from the same seed and must agree.
pub fn self_check() -> Result<(), String> {
    let twice = |seed: u64, draw: &dyn Fn() -> Vec<u8>| {
        reseed(seed);
        let a = draw();
        reseed(seed);
        let b = draw();
        a == b
    };
    if !twice(1, &|| {
        let mut buf = [0u8; 32];
        let _ = getrandom::fill(&mut buf);
        buf.to_vec()
    }) {
        return Err("the getrandom crate does not reach the interposer (is `getrandom` exported from the binary?)".into());
    }
    if !twice(2, &|| {
        std::thread::spawn(|| std::collections::hash_map::RandomState::new().hash_one(42u64))
            .join()
            .unwrap_or_default()
            .to_le_bytes()
            .to_vec()
    }) {
        return Err("std's hash map keys do not come from the interposer".into());
    }
    if !twice(3, &|| {
        std::thread::spawn(|| rand::Rng::next_u64(&mut rand::rng()))
            .join()
            .unwrap_or_default()
            .to_le_bytes()
            .to_vec()
    }) {
        return Err("rand's thread RNG does not come from the interposer".into());
    }
    if CALLS.load(Ordering::Relaxed) == 0 {
        return Err("the interposer was never called".into());
    }
    Ok(())
}
