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

mod http_edge;
mod webhooks;

/// jemalloc returns freed pages to the system on a timer (glibc's malloc keeps them in its
/// arenas), and reports the heap in use, which `/metrics` shows.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Heap and runtime figures for `/metrics`: bytes allocated by the program and resident in the
/// allocator, tasks alive.
fn heap_metrics(out: &mut String) {
    use std::fmt::Write as _;
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return;
    }
    // Tasks alive on the runtime: a soak's leak check (a task per viewer or connection left
    // behind shows here long before it shows in memory).
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let _ = writeln!(
        out,
        "# HELP jiangtang_tasks_alive tasks alive on the runtime\n# TYPE jiangtang_tasks_alive gauge\njiangtang_tasks_alive {tasks}"
    );
    for (name, help, value) in [
        (
            "heap_allocated_bytes",
            "bytes allocated by the relay",
            stats::allocated::read(),
        ),
        (
            "heap_resident_bytes",
            "bytes resident in the allocator",
            stats::resident::read(),
        ),
    ] {
        if let Ok(v) = value {
            let _ = writeln!(out, "# HELP jiangtang_{name} {help}");
            let _ = writeln!(out, "# TYPE jiangtang_{name} gauge");
            let _ = writeln!(out, "jiangtang_{name} {v}");
        }
    }
}

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
    /// Operator accounts of the console (/admin), in the catalogue's database.
    Operator {
        /// Configuration file (for the catalogue's database).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: OperatorAction,
    },
}

#[derive(Subcommand)]
enum OperatorAction {
    /// Create an account; the password (at least 10 characters) is read from stdin.
    Add {
        /// Login name.
        name: String,
    },
    /// Set an account's password (read from stdin); its sessions end.
    Passwd {
        /// Login name.
        name: String,
    },
    /// List the accounts.
    List,
}

/// Runs `jiangtang operator ...` against the configured catalogue.
fn operator_command(config: Option<PathBuf>, action: OperatorAction) -> anyhow::Result<()> {
    let config = match config {
        Some(path) => config::Config::load(&path)?,
        None => config::Config::defaults()?,
    };
    let password = || -> anyhow::Result<String> {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let c = catalogue::Catalogue::open(catalogue::Settings::from_config(&config))
            .await
            .context("opening the catalogue database")?;
        let result = match action {
            OperatorAction::Add { name } => c
                .add_operator(&name, &password()?, false)
                .await
                .map(|a| println!("operator {} created", a.name)),
            OperatorAction::Passwd { name } => c
                .add_operator(&name, &password()?, true)
                .await
                .map(|a| println!("password of {} set", a.name)),
            OperatorAction::List => c.operators().await.map(|list| {
                for a in list {
                    println!("{}", a.name);
                }
            }),
        };
        c.close().await;
        result.map_err(anyhow::Error::from)
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::DefaultConfig => {
            print!("{}", config::DEFAULT_TOML);
            Ok(())
        }
        Command::Operator { config, action } => operator_command(config, action),
        Command::Serve { config } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        // mpeg2ts-reader logs every damaged packet; the SRT input reports
                        // damage itself, rate-limited.
                        .unwrap_or_else(|_| "info,mpeg2ts_reader=off".into()),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::env::var_os("NO_COLOR").is_none())
                .init();
            let config = match config {
                Some(path) => config::Config::load(&path)?,
                None => config::Config::defaults()?,
            };
            let result = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(config));
            result?;
            // Everything of ours is shut down; libsrt's static destructors would block exit.
            libsrt::exit_process(0)
        }
    }
}

/// How long jemalloc keeps freed pages before handing them back. A lecture frees a segment's
/// worth of media every couple of seconds per rendition; at jemalloc's default 10 s those
/// pages stay resident 10 s longer, ~4 MiB per 2.5 Mbit/s lecture (scripts/lecture-memory.sh).
/// After 1 s instead, the next segments fault a few pages back in (~80 per second per
/// lecture). `_RJEM_MALLOC_CONF=dirty_decay_ms:N` at start-up is overridden by this.
const DIRTY_DECAY_MS: isize = 1000;

/// Sets jemalloc's dirty-page decay time for the arenas that exist and those made later, and
/// hands freed pages straight back from the muzzy state (no second wait).
fn set_decay(ms: isize) -> tikv_jemalloc_ctl::Result<()> {
    use tikv_jemalloc_ctl::{Access, AsName};
    b"arenas.dirty_decay_ms\0".name().write(ms)?;
    b"arenas.muzzy_decay_ms\0".name().write(0isize)?;
    for i in 0..tikv_jemalloc_ctl::arenas::narenas::read()? {
        // Arenas not yet initialised refuse; they start with the defaults set above.
        let _ = format!("arena.{i}.dirty_decay_ms\0")
            .as_bytes()
            .name()
            .write(ms);
        let _ = format!("arena.{i}.muzzy_decay_ms\0")
            .as_bytes()
            .name()
            .write(0isize);
    }
    Ok(())
}

async fn serve(mut config: config::Config) -> anyhow::Result<()> {
    // Let jemalloc hand freed pages back to the system in the background (after its decay
    // time) instead of only when the program next allocates.
    if let Err(e) = set_decay(DIRTY_DECAY_MS) {
        warn!("jemalloc decay time not set: {e}");
    }
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        warn!("jemalloc background purging unavailable: {e}");
    }
    // The catalogue takes the file's lectures (not the demo, which is the relay's own).
    let programme = if config.catalogue.enabled {
        let c = catalogue::Catalogue::open(catalogue::Settings::from_config(&config))
            .await
            .context("opening the catalogue database")?;
        c.import_config(&config.lecture)
            .await
            .context("importing [[lecture]] entries into the catalogue")?;
        Some(c)
    } else {
        None
    };
    if config.demo.enabled && config.lecture(&config.demo.name).is_none() {
        // The demo is always allowed to publish, even when only configured lectures are.
        config.lecture.push(config::LectureConfig {
            name: config.demo.name.clone(),
            title: Some("演示讲堂 · Demo lecture".into()),
            publish_key: None,
            language: config.demo.tones.keys().next().cloned(),
            srt_passphrase: None,
            starts_at: None,
            ends_at: None,
            // It never ends: recording it would only fill the disk.
            record: Some(false),
            ladder: None,
            retention_days: None,
            hall: None,
            category: None,
            seats: None,
            visibility: None,
        });
    }
    if config.hls.part_target_ms < 300 {
        warn!(
            "hls.part_target_ms = {}: parts are at least 300 ms, the shortest that keeps every \
             part within 85-100 % of PART-TARGET with AAC's frames (RFC 8216bis)",
            config.hls.part_target_ms
        );
    }
    if config.http.operator_token.is_empty() {
        warn!(
            "http.operator_token is empty: clients on this machine act as operators. A reverse \
             proxy on this machine must send X-Forwarded-For (or Forwarded, X-Real-IP, Via) so \
             its clients do not; set a token before putting one in front that does not"
        );
    }
    for l in &config.lecture {
        if l.publish_key.is_none() && !(config.demo.enabled && l.name == config.demo.name) {
            warn!(lecture = %l.name, "[[lecture]] without publish_key: anyone may publish it");
        }
    }
    let config = Arc::new(config);
    let hub = relay::Hub::new(config.clone());
    // Deny by default: the demo, the catalogue's lectures (with their keys and playback
    // tokens), the file's [[lecture]] entries, and other names only when allowed.
    // An edge's pull publishes with a key of this run's own, not the configured edge.key
    // (its origins know that one).
    let pull_key = format!("{:032x}", rand::random::<u128>());
    let mut chain: relay::admission::Chain = vec![Arc::new(relay::admission::EdgeKeys::new(
        &config.edge,
        Some(pull_key.clone()),
    ))];
    if config.demo.enabled {
        chain.push(Arc::new(relay::admission::FileLectures::new(
            config.lecture.iter().filter(|l| l.name == config.demo.name),
        )));
    }
    if let Some(c) = &programme {
        chain.push(Arc::new(c.clone()));
    }
    chain.push(Arc::new(relay::admission::FileLectures::new(
        &config.lecture,
    )));
    chain.push(Arc::new(relay::admission::Unconfigured(
        config.lectures.allow_unconfigured,
    )));
    hub.set_admission(chain);
    if let Some(c) = &programme {
        hub.set_schedule(Arc::new(ProgrammeSchedule(c.clone())));
    }
    tokio::spawn(hub.clone().run_maintenance());
    // Recordings: found (and those a stopped relay cut off recovered) before anything is
    // served; kept while the folder exists even when new lectures are not recorded.
    let recordings = if config.recording.enabled
        || config.lecture.iter().any(|l| l.record == Some(true))
        || config.recording.dir.is_dir()
    {
        let rc = recorder::RecordingConfig {
            dir: config.recording.dir.clone(),
            retention_days: config.recording.retention_days,
            min_free_bytes: config.recording.min_free_mb << 20,
            max_pending_bytes: (config.recording.max_pending_mb << 20) as usize,
        };
        let library =
            Arc::new(tokio::task::spawn_blocking(move || recorder::Library::open(rc)).await?);
        hub.set_recordings(library.clone());
        // Posters: the first picture of each recording, decoded by GStreamer, at most
        // 1280 pixels wide.
        library.set_poster_maker(Arc::new(|init: &[u8], seg: &[u8], w: u32, h: u32| {
            let size = transcode::poster::poster_size(w, h, 1280);
            transcode::poster::jpeg(init, seg, Some(size)).map(|j| j.data)
        }));
        let expiring = library.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let l = expiring.clone();
                let _ = tokio::task::spawn_blocking(move || l.expire(jiff::Timestamp::now())).await;
            }
        });
        Some(library)
    } else {
        None
    };
    let hooks = if config.recording.webhook_url.is_empty() {
        None
    } else {
        let dir = config.recording.dir.join(".webhooks");
        let max = config.recording.webhook_max_attempts;
        let outbox = tokio::task::spawn_blocking(move || {
            recorder::outbox::Outbox::open(&dir, max)
                .with_context(|| format!("opening the webhook queue in {}", dir.display()))
        })
        .await??;
        let hooks = webhooks::Webhooks::new(Arc::new(outbox), &config.http.public_url);
        tokio::spawn(webhooks::watch_lectures(hub.clone(), hooks.clone()));
        tokio::spawn(webhooks::deliver(
            hooks.clone(),
            config.recording.webhook_url.clone(),
            config.recording.webhook_secret.clone(),
        ));
        Some(hooks)
    };
    if let Some(library) = &recordings {
        let (hooks, programme, rt) = (
            hooks.clone(),
            programme.clone(),
            tokio::runtime::Handle::current(),
        );
        library.on_notice(Arc::new(move |notice, rec| {
            if let Some(h) = &hooks {
                h.notice(notice, rec);
            }
            if notice == recorder::Notice::Ended
                && webhooks::replayable(rec)
                && let Some(c) = programme.clone()
            {
                let (lecture, url) = (rec.meta().lecture, format!("/replay/{}/index.m3u8", rec.id));
                rt.spawn(async move {
                    if let Err(e) = c.replay_ready(&lecture, &url).await {
                        warn!(%lecture, "catalogue: {e}");
                    }
                });
            }
        }));
    }

    http_edge::raise_open_files_limit(config.http.max_connections);
    let edge = http_edge::Edge::new(&config.http);
    // HTTPS first: a certificate that does not load stops the start, naming the file.
    let https = if config.http.tls.enabled() {
        let store = http_edge::CertStore::open(&config.http.tls)
            .context("loading the certificate of [http.tls]")?;
        let acceptor = store.acceptor()?;
        tokio::spawn(store.watch(
            edge.clone(),
            std::time::Duration::from_millis(config.http.tls.watch_interval_ms),
        ));
        let listener = listen_tcp(config.http.tls.listen)
            .with_context(|| format!("binding HTTPS to {}", config.http.tls.listen))?;
        println!("jiangtang: https listening on {}", listener.local_addr()?);
        Some((listener, acceptor))
    } else {
        None
    };
    let http = listen_tcp(config.http.listen)
        .with_context(|| format!("binding HTTP to {}", config.http.listen))?;
    // Tests and scripts read these lines to find ports chosen by the OS (port 0).
    println!("jiangtang: http listening on {}", http.local_addr()?);
    // The security headers go on the routers that serve pages only: as a layer over the
    // whole app they cost every HLS request ~8 % of its CPU (hls-serve-bench) for nothing.
    let page_headers = axum::middleware::from_fn(html_security_headers);
    let mut app =
        relay::http::router(hub.clone()).merge(player_web::router().layer(page_headers.clone()));
    let mut pages = None;
    if let Some(c) = &programme {
        let live: Arc<dyn site::Live> = Arc::new(RelayLive(hub.clone()));
        let s = site::Site::new(c.clone(), live, &config);
        app = app
            .merge(c.router())
            .merge(s.clone().router().layer(page_headers));
        pages = Some(s);
    }
    let transcoders: Arc<dyn media::encode::Transcoders> =
        Arc::new(transcode::opus::GstTranscoders {
            watchdog: transcode::supervise::Watchdog::from_config(&config.transcode),
        });
    hub.set_level_meters(transcoders.clone());
    let mut whep_metrics = None;
    if config.webrtc.enabled {
        let sockets = relay::whep::bind(&config.webrtc)
            .await
            .with_context(|| format!("binding WebRTC UDP to {}", config.webrtc.udp_listen))?;
        let whep = relay::whep::Whep::start(sockets, hub.clone(), transcoders.clone());
        for addr in whep.candidates() {
            println!("jiangtang: webrtc listening on udp {addr}");
        }
        for addr in whep.tcp_candidates() {
            println!("jiangtang: webrtc listening on tcp {addr}");
        }
        whep_metrics = Some(whep.clone());
        app = app.merge(whep.router());
    }
    let metrics_recordings = recordings.clone();
    let edge_stats = edge.clone();
    let metrics_hub = hub.clone();
    app = app.route(
        "/metrics",
        axum::routing::get(move || {
            let (whep, lib, edge_stats, hub) = (
                whep_metrics.clone(),
                metrics_recordings.clone(),
                edge_stats.clone(),
                metrics_hub.clone(),
            );
            async move {
                let mut out = String::new();
                if let Some(whep) = whep {
                    whep.render_metrics(&mut out);
                }
                if let Some(lib) = lib {
                    lib.metrics_text(&mut out);
                }
                let restarts = transcode::supervise::restarts_total();
                out.push_str(&format!(
                    "# HELP jiangtang_transcoder_restarts_total Audio transcoders restarted after an error or a stall\n# TYPE jiangtang_transcoder_restarts_total counter\njiangtang_transcoder_restarts_total {restarts}\n"
                ));
                media::limits::render(&mut out);
                edge_stats.stats.render(&mut out);
                if let Some(spool) = hub.spool_stats() {
                    spool.render(&mut out);
                }
                heap_metrics(&mut out);
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    out,
                )
            }
        }),
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let mut tasks = tokio::task::JoinSet::new();
    // Inputs stop first, then lectures end, and only then HTTP and the rest (`stop_tx`).
    let (inputs_stop_tx, inputs_stop_rx) = tokio::sync::watch::channel(false);
    let mut rtmp_task = None;
    if config.rtmp.enabled {
        let rtmp = TcpListener::bind(config.rtmp.listen)
            .await
            .with_context(|| format!("binding RTMP to {}", config.rtmp.listen))?;
        println!("jiangtang: rtmp listening on {}", rtmp.local_addr()?);
        if let Some(p) = &pages {
            p.set_ports(Some(rtmp.local_addr()?.port()), None);
        }
        let publish: Arc<dyn Publish> = hub.clone();
        let mut stop = inputs_stop_rx.clone();
        rtmp_task = Some(tokio::spawn(ingest::rtmp::serve(
            rtmp,
            config.rtmp.clone(),
            publish,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
    }
    let _srt = if config.srt.enabled {
        let publish: Arc<dyn Publish> = hub.clone();
        let srt = ingest::srt::start(config.clone(), publish, transcoders.clone())
            .with_context(|| format!("binding SRT to {}", config.srt.listen))?;
        println!("jiangtang: srt listening on udp {}", srt.local_addr());
        if let Some(p) = &pages {
            p.set_ports(None, Some(srt.local_addr().port()));
        }
        Some(srt)
    } else {
        None
    };
    let _cameras = (!config.camera.is_empty()).then(|| {
        let publish: Arc<dyn Publish> = hub.clone();
        for c in &config.camera {
            info!(lecture = %c.lecture, pull = ?c.pull, "camera configured");
        }
        ingest::rtsp::start(config.clone(), publish, transcoders.clone())
    });
    let _edge = if config.edge.is_edge() {
        let publish: Arc<dyn Publish> = hub.clone();
        match ingest::edge::start(config.clone(), publish, pull_key) {
            Ok(e) => {
                info!(origins = ?config.edge.origins, always = ?config.edge.always, "edge of origins");
                Some(e)
            }
            Err(e) => return Err(anyhow::anyhow!("edge: {e}")),
        }
    } else {
        None
    };
    if let Some(c) = &programme {
        tasks.spawn(c.clone().run(stopped()));
        tasks.spawn(tell_catalogue_when_live(hub.clone(), c.clone(), stopped()));
    }
    // Client addresses reach handlers that need them (the operator API's loopback rule):
    // the edge puts them in each request.
    if let Some((listener, acceptor)) = https {
        tasks.spawn(
            edge.clone()
                .serve(listener, Some(acceptor), app.clone(), stopped()),
        );
    }
    tasks.spawn(edge.clone().serve(http, None, app, stopped()));

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
    // 1. Inputs stop: RTMP publishers are told and closed, SRT and cameras dropped.
    let _ = inputs_stop_tx.send(true);
    if let Some(t) = rtmp_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    drop(_demo);
    drop(_srt);
    drop(_cameras);
    drop(_edge);
    // 2. Every lecture ends: playlists get EXT-X-ENDLIST (players blocked on a reload get
    // it at once), WebRTC sessions close, recordings are flushed and closed.
    hub.end_all();
    if let Some(lib) = recordings {
        let closed =
            tokio::task::spawn_blocking(move || lib.wait_idle(std::time::Duration::from_secs(5)))
                .await
                .unwrap_or(false);
        if !closed {
            warn!(
                "some recordings were still being written at exit: they will be recovered at the next start"
            );
        }
    }
    // 3. Players polling the playlists get a moment to see their end; queued webhooks (the
    // lectures' ends) a few seconds to go out. What is not delivered stays in the queue on
    // disk for the next start.
    let drain = tokio::time::sleep(SHUTDOWN_DRAIN);
    if let Some(h) = &hooks {
        // The lectures' ends are queued by tasks that heard of them just now.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let _ = tokio::time::timeout(SHUTDOWN_WEBHOOKS, h.delivered_all()).await;
    }
    drain.await;
    // 4. Then HTTP and the rest.
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if let Some(c) = programme {
        c.close().await;
    }
    Ok(())
}

/// How long HTTP stays up at shutdown after every lecture ended, so players polling a
/// playlist see its `EXT-X-ENDLIST`.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_millis(1500);
/// Longest wait at shutdown for queued webhooks to be delivered.
const SHUTDOWN_WEBHOOKS: std::time::Duration = std::time::Duration::from_secs(3);

/// What the pages learn from the relay.
struct RelayLive(Arc<relay::Hub>);

/// The catalogue's programme, for players' "next lecture".
struct ProgrammeSchedule(catalogue::Catalogue);

impl relay::hub::Schedule for ProgrammeSchedule {
    fn upcoming(&self, stream: &str, after: i64) -> Vec<(String, i64)> {
        self.0.upcoming(stream, after, 3)
    }
}

impl site::Live for RelayLive {
    fn live_streams(&self) -> Vec<String> {
        self.0
            .list()
            .iter()
            .filter(|l| l.status() == relay::hub::Status::Live && l.has_media())
            .map(|l| l.name.clone())
            .collect()
    }

    fn sites(&self, stream: &str) -> serde_json::Value {
        self.0.roster.json(stream, &self.0.config().site)
    }

    fn replays(&self) -> Vec<site::Replay> {
        let Some(lib) = self.0.recordings() else {
            return Vec::new();
        };
        let mut list: Vec<site::Replay> = lib
            .list()
            .iter()
            .map(|r| {
                let c = r.contents();
                site::Replay {
                    id: r.id.clone(),
                    stream: c.meta.lecture.clone(),
                    title: c.meta.title.clone(),
                    started: c.meta.started,
                    duration_s: c.duration(),
                }
            })
            .collect();
        list.sort_by_key(|r| std::cmp::Reverse(r.started));
        list
    }

    fn questions(&self, stream: &str) -> serde_json::Value {
        serde_json::to_value(self.0.questions.list(&self.0, stream)).unwrap_or_default()
    }

    fn asks(&self, stream: &str) -> serde_json::Value {
        relay::ask::list(&self.0, stream)
    }

    fn ask(
        &self,
        stream: &str,
        action: site::AskRequest,
    ) -> Result<serde_json::Value, (u16, String)> {
        use relay::ask::AskAction;
        let action = match action {
            site::AskRequest::Accept { question } => AskAction::Accept { question },
            site::AskRequest::Broadcast(id) => AskAction::Broadcast(id),
            site::AskRequest::OffAir(id) => AskAction::OffAir(id),
            site::AskRequest::End(id) => AskAction::End(id),
        };
        relay::ask::act(&self.0, stream, action)
            .map_err(|e| (e.status().as_u16(), e.message().to_string()))
    }
}

/// Tells the catalogue when a lecture goes live (it marks the occurrence on now and sends
/// the "goes live" webhook to those who booked it, once per occurrence).
async fn tell_catalogue_when_live(
    hub: Arc<relay::Hub>,
    programme: catalogue::Catalogue,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut events = hub.subscribe();
    let mut live = std::collections::HashSet::<String>::new();
    let watch = async {
        loop {
            let name = match events.recv().await {
                Ok(e) => e.lecture.to_string(),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let is_live = hub
                .lecture(&name)
                .is_some_and(|l| l.status() == relay::hub::Status::Live);
            if !is_live {
                live.remove(&name);
            } else if live.insert(name.clone())
                && let Err(e) = programme.lecture_went_live(&name).await
            {
                warn!(lecture = %name, "catalogue: {e}");
            }
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = watch => {}
    }
}

/// A listening TCP socket with a deep accept queue. tokio's `bind` asks for 1,024; when a
/// class starts, or a flood arrives, more handshakes than that complete between two
/// accepts on a busy machine and the kernel drops the SYNs, which clients retry only
/// after a second or more. The kernel caps the figure at `net.core.somaxconn`.
fn listen_tcp(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
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

/// CSP for pages that set none themselves (the site and the console): only our own scripts,
/// forms posting only here.
const PAGE_CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; base-uri 'none'; object-src 'none'";

/// Security headers on every HTML page (a layer on the routers that serve pages): a CSP (the player's own, else [`PAGE_CSP`]) with
/// `frame-ancestors` (any site for `/play/`, so the district's apps can embed the player in
/// an iframe; this origin for everything else, so the console and ticket pages cannot be
/// framed), `X-Content-Type-Options: nosniff` and `Referrer-Policy: same-origin` (playback
/// tokens ride in URLs and must not leave in a Referer).
async fn html_security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let embeddable = req.uri().path().starts_with("/play/");
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !html {
        return r;
    }
    let base = h
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(PAGE_CSP)
        .to_string();
    let csp = if base.contains("frame-ancestors") {
        base
    } else if embeddable {
        format!("{base}; frame-ancestors *")
    } else {
        format!("{base}; frame-ancestors 'self'")
    };
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}
