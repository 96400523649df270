//! Exports the simulator binary's `getrandom`/`getentropy` interposers in its dynamic symbol
//! table. getrandom 0.4 (behind `rand`) finds the function with `dlsym(RTLD_DEFAULT, ...)`,
//! which only sees exported symbols; std links to it directly.
fn main() {
    for symbol in ["getrandom", "getentropy"] {
        println!("cargo:rustc-link-arg-bin=shoal-sim=-Wl,--export-dynamic-symbol={symbol}");
    }
}
