//! `swiftgate-management`: `serve` runs the management server; the other subcommands are an
//! admin CLI over its REST API.

use clap::Parser;
use swiftgate_management::api::{AllowedHosts, ApiConfig, AuthMode, HttpLimits};
use swiftgate_management::cli::{Cli, Command, run_client};
use swiftgate_management::grpc::PeerServices;
use swiftgate_management::server::{ServeConfig, run};
use swiftgate_management::tls::GrpcTls;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .init();
            if cli.token.is_some() || cli.token_file.is_some() {
                eprintln!(
                    "error: --token and --token-file are for client commands; `serve` issues \
                     tokens itself (its first start writes an admin token to <data-dir>/{})",
                    swiftgate_management::server::ADMIN_TOKEN_FILE
                );
                return std::process::ExitCode::FAILURE;
            }
            let cfg = ServeConfig {
                data_dir: args.data_dir.clone(),
                init: args.init,
                listen: args.listen,
                grpc_listen: (!args.no_grpc).then_some(args.grpc_listen),
                api: ApiConfig {
                    auth: if args.insecure_no_auth {
                        AuthMode::InsecureNoAuth
                    } else {
                        AuthMode::Tokens
                    },
                    hosts: AllowedHosts::new(args.api_hosts.iter().cloned()),
                },
                limits: HttpLimits::default(),
                reissue_admin_token: args.reissue_admin_token,
                grpc_tls: match (&args.grpc_tls_cert, &args.grpc_tls_key) {
                    _ if args.grpc_plaintext => GrpcTls::Plaintext,
                    (Some(cert), Some(key)) => GrpcTls::Files {
                        cert: cert.clone(),
                        key: key.clone(),
                    },
                    _ => {
                        let mut names: Vec<String> =
                            vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
                        if !args.grpc_listen.ip().is_unspecified() {
                            names.push(args.grpc_listen.ip().to_string());
                        }
                        names.extend(args.grpc_hosts.iter().cloned());
                        names.dedup();
                        GrpcTls::SelfSigned { names }
                    }
                },
                peer_services: match peer_services(args) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return std::process::ExitCode::FAILURE;
                    }
                },
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let r = rt.block_on(run(cfg));
            // Tasks still running (connections past their grace period) are dropped; a store
            // write in progress on the blocking pool gets a moment to finish.
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
            match r {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        _ => match run_client(&cli) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

/// The servers agents are told about, with the secrets their credentials come from.
fn peer_services(args: &swiftgate_management::cli::ServeArgs) -> Result<PeerServices, String> {
    use swiftgate_management::turn::{MAX_TTL, MIN_TTL, RelayConfig, TurnConfig, TurnSecret};
    let ttl = |flag: &str, secs: u64| {
        let t = std::time::Duration::from_secs(secs);
        if !(MIN_TTL..=MAX_TTL).contains(&t) {
            return Err(format!(
                "--{flag}: {secs} is out of range ({} to {} seconds)",
                MIN_TTL.as_secs(),
                MAX_TTL.as_secs()
            ));
        }
        Ok(t)
    };
    let secret = |flag: &str, file: &Option<std::path::PathBuf>| {
        let path = file
            .as_ref()
            .ok_or_else(|| format!("--{flag} is required"))?;
        TurnSecret::from_file(path).map_err(|e| format!("--{flag}: {e}"))
    };
    Ok(PeerServices {
        signal: args.signal.clone(),
        // Signal is served on the gRPC listener, so it speaks what gRPC speaks.
        signal_tls: args.signal_tls || !args.grpc_plaintext,
        stuns: args.stuns.clone(),
        relay: if args.relays.is_empty() {
            None
        } else {
            Some(RelayConfig {
                urls: args.relays.clone(),
                secret: secret("relay-secret-file", &args.relay_secret_file)?,
                ttl: ttl("relay-credentials-ttl", args.relay_credentials_ttl)?,
            })
        },
        turn: if args.turns.is_empty() {
            None
        } else {
            Some(TurnConfig {
                uris: args.turns.clone(),
                secret: secret("turn-secret-file", &args.turn_secret_file)?,
                ttl: ttl("turn-credentials-ttl", args.turn_credentials_ttl)?,
            })
        },
    })
}
