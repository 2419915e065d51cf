//! The catalogue's test harness: a catalogue on SQLite (a temporary file) or PostgreSQL (a
//! fresh database in the shared throwaway cluster), its router served on a loopback port,
//! a manual clock, and a client.
#![allow(dead_code)]

pub mod pg;

use std::net::SocketAddr;
use std::sync::Arc;

use catalogue::clock::ManualClock;
use catalogue::{Catalogue, Location, Settings};
use reqwest::StatusCode;
use serde_json::Value;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file.
    Sqlite,
    /// The shared PostgreSQL cluster.
    Postgres,
}

/// The operator token the harness configures.
pub const OPERATOR: &str = "operator-token-for-tests";

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "jiangtang-catalogue-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A catalogue served on a loopback port.
pub struct Harness {
    pub db: Db,
    pub base: String,
    pub catalogue: Catalogue,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    pub settings: Settings,
    server: tokio::task::JoinHandle<()>,
    pub dir: Arc<TempDir>,
}

/// 2030-01-07T00:00:00Z, a Monday.
pub fn t0() -> jiff::Timestamp {
    "2030-01-07T00:00:00Z".parse().unwrap()
}

/// Settings for `db`: the defaults with the test operator token and a generous rate limit.
pub fn settings(db: Db, dir: &TempDir) -> Settings {
    let location = match db {
        Db::Sqlite => Location::Sqlite {
            path: dir.0.join("catalogue.db"),
            full_sync: true,
        },
        Db::Postgres => Location::Postgres(pg::shared().database()),
    };
    let mut s = Settings::defaults(location);
    s.operator_token = OPERATOR.into();
    s.bookings_per_minute = 100_000;
    s
}

impl Harness {
    /// A fresh catalogue on `db`, with `tweak` applied to its settings.
    pub async fn start(db: Db, tweak: impl FnOnce(&mut Settings)) -> Harness {
        let dir = Arc::new(TempDir::new());
        let mut s = settings(db, &dir);
        tweak(&mut s);
        Harness::open(db, s, dir, Arc::new(ManualClock::new(t0()))).await
    }

    /// A catalogue with these settings (reopening a database another harness used).
    pub async fn open(
        db: Db,
        settings: Settings,
        dir: Arc<TempDir>,
        clock: Arc<ManualClock>,
    ) -> Harness {
        let catalogue = Catalogue::open_with_clock(settings.clone(), clock.clone())
            .await
            .expect("open the catalogue");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = catalogue
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Harness {
            db,
            base: format!("http://{addr}"),
            catalogue,
            clock,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
            settings,
            server,
            dir,
        }
    }

    /// Stops serving and closes the database.
    pub async fn stop(self) {
        self.server.abort();
        self.catalogue.close().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = req.send().await.expect("request");
        let status = r.status();
        let text = r.text().await.unwrap();
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, body)
    }

    /// GET as the public.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(path))).await
    }

    /// GET as an operator.
    pub async fn op_get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(path)).bearer_auth(OPERATOR))
            .await
    }

    /// POST JSON as the public.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    /// POST JSON as an operator.
    pub async fn op_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .json(&body)
                .bearer_auth(OPERATOR),
        )
        .await
    }

    /// PATCH JSON as an operator.
    pub async fn op_patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .patch(self.url(path))
                .json(&body)
                .bearer_auth(OPERATOR),
        )
        .await
    }

    /// DELETE as the public.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.delete(self.url(path))).await
    }

    /// DELETE as an operator.
    pub async fn op_delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.delete(self.url(path)).bearer_auth(OPERATOR))
            .await
    }

    /// Creates a lecture starting `in_s` seconds after the clock's now, lasting an hour.
    pub async fn lecture(&self, stream: &str, in_s: i64, seats: Option<i64>) -> i64 {
        self.lecture_with(stream, in_s, seats, serde_json::json!({}))
            .await
    }

    /// Like [`Harness::lecture`] with more fields.
    pub async fn lecture_with(
        &self,
        stream: &str,
        in_s: i64,
        seats: Option<i64>,
        extra: Value,
    ) -> i64 {
        let start = self.now() + in_s;
        let mut body = serde_json::json!({
            "title": format!("讲座 {stream}"),
            "stream": stream,
            "starts_at": jiff::Timestamp::from_second(start).unwrap().to_string(),
            "ends_at": jiff::Timestamp::from_second(start + 3600).unwrap().to_string(),
            "seats": seats,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, b) = self.op_post("/api/v1/lectures", body).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["id"].as_i64().unwrap()
    }

    /// The clock's now in Unix seconds.
    pub fn now(&self) -> i64 {
        use catalogue::clock::Clock;
        self.clock.now().as_second()
    }

    /// Books for `person`; the status and body.
    pub async fn book(&self, lecture: i64, person: &str, kind: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/api/v1/lectures/{lecture}/bookings"),
            serde_json::json!({ "person": person, "name": format!("名字 {person}"), "kind": kind }),
        )
        .await
    }
}

/// Runs `$scenario(Db)` as two tests, on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$scenario(super::support::Db::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$scenario(super::support::Db::Postgres).await
                }
            }
        )*
    };
}
