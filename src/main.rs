use clap::Parser;

fn main() {
    let cli = ndots::cli::Cli::parse();
    if let Err(e) = ndots::cli::run(cli) {
        eprintln!("ndots: {:#}", e.error);
        std::process::exit(e.code);
    }
}
