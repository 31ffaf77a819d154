//! The `caravan` binary: parses the command line and hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = caravan::cli::Cli::parse();
    match caravan::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("caravan: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
