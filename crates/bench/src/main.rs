//! `featherstore-bench`: see the library's documentation (`crates/bench/src/lib.rs`).

use clap::Parser;
use featherstore_bench::{run_suite, Args};

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = runtime.block_on(run_suite(args)) {
        eprintln!("featherstore-bench: {e}");
        std::process::exit(1);
    }
}
