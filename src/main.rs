//! The `distribot` command. Each subcommand is a thin adapter over the
//! library: it reads input, calls the runtime, and prints the outcome.

mod cli;

/// glibc's allocator takes a lock per arena, and two threads of the runtime
/// freeing what the other allocated contend for it on every job; mimalloc's
/// per-thread heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(cli::main());
}
