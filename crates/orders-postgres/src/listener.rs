//! Announcements of committed batches (`LISTEN`), so that a replica learns of orders another
//! replica stored (see [`PgRepository::announce_commits`](crate::PgRepository::announce_commits)).

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use crate::config::PgConfig;
use crate::leases::LEASES_CHANNEL;
use crate::repository::COMMITS_CHANNEL;

/// What another replica announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// It committed these new orders.
    Orders(Vec<String>),
    /// A member joined the consumers of `topic`, or released leases: time to rebalance.
    Leases { topic: String },
}

/// Listens on a dedicated connection (never a pooled one: a pool would hand the `LISTEN`ing
/// session to other work) and reconnects when it drops. Notifications are delivered only for
/// committed transactions, in commit order. Those sent while the connection is down are
/// missed: the orders they name are read through on their first request instead.
#[derive(Debug, Clone)]
pub struct CommitListener {
    config: PgConfig,
    origin: String,
}

impl CommitListener {
    /// Listens for commits of every origin but `origin` (this replica's own orders are cached
    /// by its ingest path already).
    pub fn new(config: PgConfig, origin: &str) -> Self {
        Self {
            config,
            origin: origin.to_owned(),
        }
    }

    /// Sends what other replicas announce (the uids of each batch of orders they commit, and
    /// changes of membership), until `shutdown` turns true or the receiver is dropped.
    pub async fn run(self, out: mpsc::Sender<Announcement>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let ended = tokio::select! {
                r = self.session(&out) => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match ended {
                Ok(()) => return, // the receiver is gone
                Err(e) => {
                    tracing::warn!(error = %e, "listening for commits of other replicas failed; reconnecting (their new orders are read through meanwhile)");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection's worth of listening. `Ok` when the receiver is gone.
    async fn session(&self, out: &mpsc::Sender<Announcement>) -> Result<(), String> {
        let target = self.config.display();
        let tls = self
            .config
            .tls_connector()
            .map_err(|e| format!("TLS for {target}: {e}"))?;
        let (client, mut connection) = self
            .config
            .tokio_postgres()
            .connect(tls)
            .await
            .map_err(|e| format!("connecting to {target}: {e}"))?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        // The connection must be polled for the LISTEN below to complete and for
        // notifications to arrive; it ends when the server or the network does.
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        let leases = n.channel() == LEASES_CHANNEL;
                        if tx.send((leases, n.payload().to_owned())).is_err() {
                            return Ok(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        let listened = client
            .batch_execute(&format!(
                "LISTEN {COMMITS_CHANNEL}; LISTEN {LEASES_CHANNEL}"
            ))
            .await
            .map_err(|e| format!("LISTEN on {target}: {e}"));
        if let Err(e) = listened {
            driver.abort();
            return Err(e);
        }
        tracing::debug!(%target, "listening for commits of other replicas");
        while let Some((leases, payload)) = rx.recv().await {
            let announced = if leases {
                Announcement::Leases { topic: payload }
            } else {
                let mut lines = payload.split('\n');
                if lines.next() == Some(self.origin.as_str()) {
                    continue;
                }
                let uids: Vec<String> = lines.map(str::to_owned).collect();
                if uids.is_empty() {
                    continue;
                }
                Announcement::Orders(uids)
            };
            if out.send(announced).await.is_err() {
                driver.abort();
                return Ok(());
            }
        }
        match driver.await {
            Ok(Err(e)) => Err(format!("connection to {target}: {e}")),
            _ => Err(format!("connection to {target} closed")),
        }
    }
}
