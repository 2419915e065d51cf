//! `jiangtang`: the live-lecture relay.
//!
//! `jiangtang serve [--config FILE]` starts the HTTP server (HLS, API, player), the RTMP
//! listener and, unless disabled, the demo lecture. Without a file it runs on the embedded
//! defaults (`config/jiangtang.toml`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use media::sink::Publish;
use tokio::net::TcpListener;
use tracing::{info, warn};

#[derive(Parser)]
#[command(
    name = "jiangtang",
    version,
    about = "Live-lecture streaming and broadcast relay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve {
        /// Configuration file (TOML); keys not given keep their defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the default configuration, with comments.
    DefaultConfig,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::DefaultConfig => {
            print!("{}", config::DEFAULT_TOML);
            Ok(())
        }
        Command::Serve { config } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::env::var_os("NO_COLOR").is_none())
                .init();
            let config = match config {
                Some(path) => config::Config::load(&path)?,
                None => config::Config::defaults()?,
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(config))
        }
    }
}

async fn serve(mut config: config::Config) -> anyhow::Result<()> {
    if config.demo.enabled && config.lecture(&config.demo.name).is_none() {
        // The demo is always allowed to publish, even when only configured lectures are.
        config.lecture.push(config::LectureConfig {
            name: config.demo.name.clone(),
            title: Some("演示讲堂 · Demo lecture".into()),
            publish_key: None,
            language: config.demo.tones.keys().next().cloned(),
        });
    }
    let config = Arc::new(config);
    let hub = relay::Hub::new(config.clone());
    tokio::spawn(hub.clone().run_maintenance());

    let http = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding HTTP to {}", config.http.listen))?;
    // Tests and scripts read these lines to find ports chosen by the OS (port 0).
    println!("jiangtang: http listening on {}", http.local_addr()?);
    let app = relay::http::router(hub.clone()).merge(player_web::router());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let mut tasks = tokio::task::JoinSet::new();
    if config.rtmp.enabled {
        let rtmp = TcpListener::bind(config.rtmp.listen)
            .await
            .with_context(|| format!("binding RTMP to {}", config.rtmp.listen))?;
        println!("jiangtang: rtmp listening on {}", rtmp.local_addr()?);
        let publish: Arc<dyn Publish> = hub.clone();
        tasks.spawn(ingest::rtmp::serve(
            rtmp,
            config.rtmp.clone(),
            publish,
            stopped(),
        ));
    }
    let stop_http = stopped();
    tasks.spawn(async move {
        if let Err(e) = axum::serve(http, app)
            .with_graceful_shutdown(stop_http)
            .await
        {
            warn!("http server: {e}");
        }
    });

    let _demo = if config.demo.enabled {
        let publish: Arc<dyn Publish> = hub.clone();
        match transcode::demo::start(&config.demo, publish) {
            Ok(d) => {
                println!(
                    "jiangtang: demo lecture at http://{}/play/{}",
                    config.http.listen, config.demo.name
                );
                Some(d)
            }
            Err(e) => {
                warn!("demo lecture not started: {e}");
                None
            }
        }
    } else {
        None
    };

    shutdown_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    drop(_demo);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
