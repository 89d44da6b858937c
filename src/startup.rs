//! Building and running the application: the database, the HTTP server and the workers.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{dev::Server, web, App, HttpServer};
use anyhow::Context;
use referral_bridge_adapters::loyaltysurf::LoyaltySurfCallbacks;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseUrl, Settings};
use crate::db::{jobs, Db};
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::state::AppState;
use crate::worker::Worker;

/// How many threads write each kind of batch (ingest, callbacks) on this backend. SQLite has
/// one writer anyway. On Postgres, a writer per core keeps the cores busy while another batch
/// waits on the server; more writers would only make batches smaller.
pub fn batch_writers(url: &DatabaseUrl) -> usize {
    match url {
        DatabaseUrl::Sqlite(_) => 1,
        DatabaseUrl::Postgres(_) => {
            std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
        }
    }
}

/// The connections a serving process may hold at once on Postgres: every ingest, callback and
/// attempt writer, every worker, and two for the HTTP handlers' reads. A smaller pool would
/// make readers wait for connections that writers hold (on SQLite writers take turns before
/// they take a connection, so any size serves).
pub fn pool_needed(settings: &Settings) -> u32 {
    let writers = batch_writers(&settings.database_url);
    (2 * writers + crate::worker::ATTEMPT_WRITERS + settings.worker.concurrency + 2) as u32
}

/// The pool size for a serving process: `BRIDGE_DB_POOL_SIZE`, which on Postgres must be at
/// least [`pool_needed`]; unset, the larger of that and 10.
pub fn serving_pool_size(settings: &Settings) -> anyhow::Result<u32> {
    let needed = pool_needed(settings);
    match (settings.db_pool_size, &settings.database_url) {
        (Some(size), DatabaseUrl::Postgres(_)) if size < needed => anyhow::bail!(
            "BRIDGE_DB_POOL_SIZE: {size} connections are fewer than this process needs on \
             Postgres ({needed}: two per core for the ingest and callback writers, the attempt \
             writers, BRIDGE_WORKERS and 2 for reads); raise it or lower BRIDGE_WORKERS"
        ),
        (Some(size), _) => Ok(size),
        (None, DatabaseUrl::Postgres(_)) => Ok(needed.max(10)),
        (None, DatabaseUrl::Sqlite(_)) => Ok(10),
    }
}

/// Connects to the database and applies pending migrations (on a blocking thread), with a
/// pool of `BRIDGE_DB_POOL_SIZE` (10 when unset) connections.
pub async fn open_database(settings: &Settings) -> anyhow::Result<Db> {
    open_database_with(settings, settings.db_pool_size.unwrap_or(10)).await
}

/// [`open_database`] with a pool of `pool_size` connections.
async fn open_database_with(settings: &Settings, pool_size: u32) -> anyhow::Result<Db> {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let db = Db::connect(&settings.database_url, pool_size, settings.db_timeout)?;
        for name in db.migrate()? {
            log::info!("applied migration {name}");
        }
        Ok(db)
    })
    .await
    .context("the database task panicked")?
}

/// The database as it is, neither created nor migrated: what `check` and `import --dry-run`
/// look at (DESIGN 3.11).
pub enum ExistingDatabase {
    /// The SQLite file does not exist yet (`serve` or `migrate` creates it).
    Missing,
    /// The database, and how many migrations it lacks.
    Found {
        /// The database.
        db: Db,
        /// Migrations `serve` or `migrate` would apply.
        pending: usize,
    },
}

/// Opens the database if it exists, without creating or migrating it.
pub async fn existing_database(settings: &Settings) -> anyhow::Result<ExistingDatabase> {
    if let DatabaseUrl::Sqlite(path) = &settings.database_url {
        if !path.exists() {
            return Ok(ExistingDatabase::Missing);
        }
    }
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let db = Db::connect(&settings.database_url, 2, settings.db_timeout)?;
        let pending = db.pending_migrations()?;
        Ok(ExistingDatabase::Found { db, pending })
    })
    .await
    .context("the database task panicked")?
}

/// An empty database in memory, migrated: what a dry run compares a file with when the
/// database does not exist yet (every valid row is new).
pub async fn empty_database() -> anyhow::Result<Db> {
    tokio::task::spawn_blocking(|| {
        // One connection: each in-memory SQLite connection is a database of its own.
        let db = Db::connect(
            &DatabaseUrl::Sqlite(":memory:".into()),
            1,
            Duration::from_secs(5),
        )?;
        db.migrate()?;
        Ok(db)
    })
    .await
    .context("the database task panicked")?
}

/// The webhook endpoints that answer 401 to everything because their secret is unset, each in
/// a sentence saying which variable opens it (warned at start-up: an operator who forgot one
/// would otherwise find out from the platform's failure e-mails).
pub fn closed_endpoints(settings: &Settings, esp_is_polled: bool) -> Vec<String> {
    let mut closed = Vec::new();
    if settings.esp.webhook_secret.is_none() && !esp_is_polled {
        closed.push(
            "ESP_WEBHOOK_SECRET is not set: POST /webhooks/esp answers 401 to everything".into(),
        );
    }
    if matches!(settings.platform, crate::config::Platform::SparkLoop)
        && settings.sparkloop.webhook_token.is_none()
    {
        closed.push(
            "SPARKLOOP_WEBHOOK_TOKEN is not set: POST /webhooks/sparkloop answers 401 to \
             everything, so no referral data reaches the ESP"
                .into(),
        );
    }
    match &settings.platform {
        crate::config::Platform::LoyaltySurf { .. } if settings.loyaltysurf_secret.is_none() => {
            closed.push(
                "LOYALTYSURF_WEBHOOK_SECRET is not set: POST /webhooks/loyaltysurf answers 401 \
                 to everything"
                    .into(),
            )
        }
        crate::config::Platform::ReferralLoop { .. } if settings.referralloop_secret.is_none() => {
            closed.push(
                "REFERRALLOOP_WEBHOOK_SECRET is not set: POST /webhooks/referralloop answers \
                 401 to everything"
                    .into(),
            )
        }
        _ => {}
    }
    closed
}

/// A bound, ready-to-run bridge: HTTP server and workers.
pub struct Application {
    port: u16,
    server: Server,
    worker: Worker,
    /// Reads an ESP that posts no webhooks (listmonk).
    poller: Option<crate::inbound::poll::Poller>,
    /// What retention's background pass needs (DESIGN 3.10).
    pruning: (Db, Settings, Arc<Metrics>),
    /// `BRIDGE_RECONCILE_EVERY`'s runs, when set (DESIGN 3.9).
    reconcile: Option<(crate::reconcile::Reconciler, Duration)>,
    shutdown: CancellationToken,
}

impl Application {
    /// Opens the database (applying migrations), binds the listener and prepares the workers.
    /// `BRIDGE_LISTEN` may use port 0; [`Application::port`] tells the port chosen.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = open_database_with(&settings, serving_pool_size(&settings)?).await?;
        if db.is_sqlite() {
            // One process serves a SQLite file, so leases left by a crashed run are stale.
            let released = db
                .write_async(|conn| jobs::release_leases(conn, None))
                .await
                .context("cannot release the leases of a previous run")?;
            if released > 0 {
                log::info!("{released} jobs claimed by a previous run are due again");
            }
        }
        let listener = TcpListener::bind(&settings.listen)
            .with_context(|| format!("cannot listen on {} (BRIDGE_LISTEN)", settings.listen))?;
        let port = listener.local_addr()?.port();
        let metrics = Arc::new(Metrics::default());
        let wake = Arc::new(Notify::new());
        let peers = Peers::new(&settings)?;
        let esp = peers.esp.clone();
        let sparkloop = referral_bridge_adapters::platform_callbacks("sparkloop")
            .context("the SparkLoop callbacks are missing")?;
        let referralloop = referral_bridge_adapters::platform_callbacks("referralloop")
            .context("the ReferralLoop callbacks are missing")?;
        let worker = Worker::new(
            db.clone(),
            settings.clone(),
            &peers,
            metrics.clone(),
            wake.clone(),
        )?;
        for closed in closed_endpoints(&settings, esp.poll_request(None).is_some()) {
            log::warn!("{closed}");
        }
        log::info!(
            "referral-bridge listening on {}, database {}",
            listener.local_addr()?,
            db.describe()
        );
        let writers = batch_writers(&settings.database_url);
        let ingest = crate::inbound::ingest::start_ingest(
            db.clone(),
            settings.dedupe_window,
            peers.forwarding(),
            writers,
            4096,
        );
        let rules = crate::inbound::callbacks::Rules {
            dedupe_window: settings.dedupe_window,
            write_delay: settings.esp.write_delay,
        };
        let callbacks = crate::inbound::callbacks::start(db.clone(), rules, writers, 4096);
        let poller = match (esp.poll_request(None), esp.outbound_problem()) {
            (None, _) => None,
            (Some(_), Some(problem)) => {
                log::warn!("{problem}; {} is not polled until then", esp.name());
                None
            }
            (Some(_), None) => Some(crate::inbound::poll::Poller::new(
                db.clone(),
                esp.clone(),
                ingest.clone(),
                wake.clone(),
                settings.esp.poll_interval,
                settings.worker.request_timeout,
            )?),
        };
        let platform_deliverable = peers.platform.outbound_problem().is_none();
        let esp_deliverable = esp.outbound_problem().is_none();
        let inbound_limit = settings
            .inbound_rate_limit
            .as_ref()
            .map(crate::http::limits::InboundLimiter::new);
        let pruning = (db.clone(), settings.clone(), metrics.clone());
        let reconcile = match settings.reconcile_every {
            None => None,
            Some(every) => Some((
                crate::reconcile::Reconciler::new(
                    db.clone(),
                    &settings,
                    worker.platform_pace(),
                    true,
                )
                .context("BRIDGE_RECONCILE_EVERY is set")?,
                every,
            )),
        };
        let state = web::Data::new(AppState {
            db,
            ingest,
            callbacks,
            sparkloop,
            referralloop,
            loyaltysurf: Box::new(LoyaltySurfCallbacks {
                tolerance: settings.loyaltysurf_tolerance,
            }),
            settings,
            metrics,
            esp,
            peers,
            wake_workers: wake,
            sign_ins: Default::default(),
            inbound_limit,
            platform_deliverable,
            esp_deliverable,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(crate::http::routes)
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(10)
        .run();
        Ok(Application {
            port,
            server,
            worker,
            poller,
            pruning,
            reconcile,
            shutdown: CancellationToken::new(),
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops the application as SIGTERM would.
    pub fn shutdown_handle(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves and works until SIGINT, SIGTERM or the shutdown handle; then stops accepting,
    /// lets requests and deliveries in flight finish (or releases them) and returns.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application {
            server,
            worker,
            poller,
            pruning: (db, settings, metrics),
            reconcile,
            shutdown,
            ..
        } = self;
        let reconciling = reconcile.map(|(reconciler, every)| {
            tokio::spawn(crate::reconcile::schedule::run(
                reconciler,
                db.clone(),
                every,
                shutdown.clone(),
            ))
        });
        let checkpoints = tokio::spawn(crate::db::wal::run(db.clone(), shutdown.clone()));
        let pruning = tokio::spawn(crate::lifecycle::run(
            db,
            settings,
            metrics,
            shutdown.clone(),
        ));
        let handle = server.handle();
        let mut server = tokio::spawn(server);
        let worker = tokio::spawn(worker.run(shutdown.clone()));
        let poller = poller.map(|poller| tokio::spawn(poller.run(shutdown.clone())));
        let served = tokio::select! {
            _ = termination() => {
                log::info!("shutting down: no new requests; finishing deliveries in flight");
                None
            }
            _ = shutdown.cancelled() => None,
            result = &mut server => Some(result),
        };
        shutdown.cancel();
        handle.stop(true).await;
        let served = match served {
            Some(result) => result,
            None => server.await,
        };
        worker.await.context("the worker panicked")?;
        pruning.await.context("the retention pass panicked")?;
        checkpoints.await.context("the WAL checkpoints panicked")?;
        if let Some(reconciling) = reconciling {
            reconciling.await.context("the reconciliation panicked")?;
        }
        if let Some(poller) = poller {
            poller.await.context("the poller panicked")?;
        }
        served
            .context("the HTTP server panicked")?
            .context("the HTTP server failed")?;
        log::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("cannot listen for SIGTERM");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_vars(vars).unwrap()
    }

    #[test]
    fn the_postgres_pool_fits_its_users() {
        let postgres = ("DATABASE_URL", "postgres://u@127.0.0.1/db");
        let s = settings(&[postgres, ("BRIDGE_WORKERS", "16")]);
        let needed = pool_needed(&s);
        // Two batch writers per core (at least 2 each), the attempt writer, the workers, 2.
        assert!(needed >= 2 * 2 + 1 + 16 + 2, "{needed}");
        assert_eq!(serving_pool_size(&s).unwrap(), needed);
        let small = settings(&[postgres, ("BRIDGE_DB_POOL_SIZE", "5")]);
        let refused = serving_pool_size(&small).unwrap_err().to_string();
        assert!(refused.starts_with("BRIDGE_DB_POOL_SIZE: 5 "), "{refused}");
        let fewer_workers = settings(&[
            postgres,
            ("BRIDGE_DB_POOL_SIZE", "30"),
            ("BRIDGE_WORKERS", "2"),
        ]);
        assert_eq!(serving_pool_size(&fewer_workers).unwrap(), 30);
        // SQLite's writers take turns before they take a connection: any size serves.
        let sqlite = settings(&[("BRIDGE_DB_POOL_SIZE", "4")]);
        assert_eq!(serving_pool_size(&sqlite).unwrap(), 4);
        assert_eq!(serving_pool_size(&settings(&[])).unwrap(), 10);
    }
}
