//! `diagnosis-exporter`: not built yet. The export pipeline (DESIGN §4) is the next
//! piece of work; until then this binary says so and exits non-zero.

fn main() -> std::process::ExitCode {
    eprintln!("diagnosis-exporter: the export pipeline is not built yet (DESIGN §4)");
    std::process::ExitCode::from(2)
}
