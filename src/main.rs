//! The `triage` binary: parses the command line and hands over to [`triage::cli`].

fn main() {
    std::process::exit(triage::cli::main());
}
