//! `trident-gateway`: see the crate documentation of `ingest-gateway`.

use clap::Parser;
use trident_service::cli::CommonArgs;

#[derive(Debug, Parser)]
#[command(
    name = "trident-gateway",
    version,
    about = "The InfluxDB-compatible write endpoint that fans every point out to the InfluxDB cluster, the raw Kafka topic and the alert topic."
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Read a password from stdin, print its argon2id hash for
    /// `gateway.auth.users[].password_hash`, and exit.
    #[arg(long)]
    hash_password: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.hash_password {
        let mut password = String::new();
        std::io::stdin()
            .read_line(&mut password)
            .map_err(|e| anyhow::anyhow!("cannot read the password from stdin: {e}"))?;
        let password = password.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            anyhow::bail!(
                "no password on stdin: echo 'the password' | trident-gateway --hash-password"
            );
        }
        println!(
            "{}",
            ingest_gateway::http::auth::hash_password(password).map_err(anyhow::Error::msg)?
        );
        return Ok(());
    }
    let Some(config) = cli.common.start(ingest_gateway::SERVICE)? else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(config.gateway.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.gateway.listen))?;
    let shutdown = trident_service::shutdown::Shutdown::on_signals()?;
    ingest_gateway::run(config, listener, shutdown).await?;
    Ok(())
}
