//! The allocator of the `orders` and `orders-bench` processes: mimalloc 2.x as the global
//! allocator, and [`configure`] to keep the memory it frees for reuse.
//!
//! Why mimalloc: a decoded order is dozens of small strings, freed a batch at a time, and
//! glibc spent a fifth of the sink path's CPU in malloc and free (ARCHITECTURE.md,
//! "Decisions"). Why no purging: by default mimalloc returns freed pages to the OS 10 ms
//! after they are freed. The consumer frees a batch (megabytes) every few hundred
//! milliseconds per partition and allocates the next, and each stored order evicts one from
//! the cache, freed on whichever thread evicts it: pages went back to the OS and were faulted
//! in again for the kernel to zero, 20 to 30% of the sink path's CPU in `perf`
//! (`clear_page_erms`). A delay of 1 s or 10 s did not help (pages freed on one thread wait
//! for that thread to allocate again); keeping them did: 17.5 → 11.5 µs of this process's CPU
//! per order. The price: resident memory stays at its high-water mark (bounded by the cache's
//! bounds and the batches in flight). `MIMALLOC_PURGE_DELAY` (milliseconds), when set, wins.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// How long freed memory stays with the process before mimalloc returns it to the OS, in
/// milliseconds: -1, never (it is reused).
pub const PURGE_DELAY_MS: i64 = -1;

/// The environment variable with which mimalloc itself takes the purge delay; when it is set,
/// [`configure`] leaves the value alone (an operator's choice wins).
pub const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// mimalloc 2.x's `mi_option_purge_delay` (its index in `mi_option_e`, mimalloc.h; the Rust
/// bindings name only some options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The purge delay to set, given the value of [`PURGE_DELAY_ENV`]: none if the operator set it.
fn purge_delay_to_set(env: Option<&std::ffi::OsStr>) -> Option<i64> {
    match env {
        Some(_) => None,
        None => Some(PURGE_DELAY_MS),
    }
}

/// Sets the allocator's purge delay (unless [`PURGE_DELAY_ENV`] is set) and returns the delay
/// in effect, in milliseconds (-1: never). Call it first thing in `main`.
pub fn configure() -> i64 {
    if let Some(ms) = purge_delay_to_set(std::env::var_os(PURGE_DELAY_ENV).as_deref()) {
        // SAFETY: setting an option is a store into mimalloc's option table, which it
        // documents as callable at any time; the index is checked by the tests below.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms);
        }
    }
    purge_delay()
}

/// The purge delay in effect, in milliseconds.
pub fn purge_delay() -> i64 {
    // SAFETY: reading an option; mimalloc initializes it from the environment on first read.
    #[allow(unsafe_code)]
    let ms = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
    ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_setting_wins() {
        assert_eq!(purge_delay_to_set(None), Some(PURGE_DELAY_MS));
        assert_eq!(purge_delay_to_set(Some("0".as_ref())), None);
    }

    #[test]
    fn configure_sets_mimallocs_purge_delay() {
        assert!(
            std::env::var_os(PURGE_DELAY_ENV).is_none(),
            "run the tests without {PURGE_DELAY_ENV}"
        );
        // mimalloc 2.x's default for purge_delay is 10 ms: this checks the option's index.
        assert_eq!(
            purge_delay(),
            10,
            "MI_OPTION_PURGE_DELAY is not purge_delay"
        );
        assert_eq!(configure(), PURGE_DELAY_MS);
        assert_eq!(purge_delay(), PURGE_DELAY_MS);
    }
}
