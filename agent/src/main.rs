use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    autoglm_agent::cli::run(std::env::args_os()).await
}
