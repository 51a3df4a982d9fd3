//! Helpers shared by the benchmark binaries.

/// `--seconds S` from the command line (0 < S <= 60), or `default`.
/// Exits with a message on a bad value: benchmarks are run by hand.
pub fn seconds_arg(default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--seconds") {
        Some(i) => args
            .get(i + 1)
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0 && *s <= 60.0)
            .unwrap_or_else(|| {
                eprintln!("--seconds takes a number of seconds between 0 and 60");
                std::process::exit(2)
            }),
        None => default,
    }
}
