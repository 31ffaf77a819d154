//! The `caravan` binary: parses the command line and hands over to the library.
//! Depends only on the library's `cli`.

// glibc's malloc and free were about a third of the server's CPU time under
// ingest (perf); mimalloc serves the same allocations for much less. It is
// built without transparent huge pages (Cargo.toml says why).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (cli, described) = match caravan::cli::parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("caravan: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match caravan::cli::run(cli, described).await {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("caravan: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
