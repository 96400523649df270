//! The `shoal-sim` command. This binary, and only it, carries the randomness interposer.

mod entropy;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    entropy::configure_from_env();
    disable_aslr();
    if let Err(e) = entropy::self_check() {
        eprintln!(
            "shoal-sim: determinism self-check failed: {e}. Runs would not be replayable; aborting."
        );
        std::process::abort();
    }
    shoal_sim::determinism::install(entropy::reseed);
    // The nodes' own logs, on stderr, when RUST_LOG asks for them (never in the trace).
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_timer(shoal_sim::log_time::SimTime)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let cli = shoal_sim::cli::Cli::parse();
    match shoal_sim::cli::main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Re-executes the process with address-space randomisation off, so that nothing seeded from
/// addresses (foldhash's default seed, pointer-keyed hashing) differs between two runs of the
/// same seed. Skipped quietly where the kernel refuses.
fn disable_aslr() {
    use nix::sys::personality::{self, Persona};
    use std::os::unix::process::CommandExt;
    const MARK: &str = "SHOAL_SIM_ASLR_OFF";
    let Ok(current) = personality::get() else {
        return;
    };
    if current.contains(Persona::ADDR_NO_RANDOMIZE) || std::env::var_os(MARK).is_some() {
        return;
    }
    if personality::set(current | Persona::ADDR_NO_RANDOMIZE).is_err() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(MARK, "1")
        .exec();
    eprintln!("shoal-sim: could not re-execute without ASLR ({err}); continuing with it");
}
