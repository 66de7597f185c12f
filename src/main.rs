//! The `distribot` command. Each subcommand is a thin adapter over the
//! library: it reads input, calls the runtime, and prints the outcome.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
