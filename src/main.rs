//! The `caravan` binary: parses the command line and hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = caravan::cli::Cli::parse();
    match caravan::cli::run(cli).await {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("caravan: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
