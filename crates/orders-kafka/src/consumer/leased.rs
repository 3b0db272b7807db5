//! Consuming a topic shared with other replicas: heartbeat, claim a fair share of the
//! partition leases, release the extras when a replica joins, give up those found lost.
//!
//! Correctness does not rest on this loop: every batch is fenced on its partition's offset
//! and lease epoch in the store. This loop only decides who works on what, so that replicas
//! do not waste work racing each other.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use orders_domain::{PartitionLease, PartitionLeases, SourceError, fair_share};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::{Consumer, PartitionEnd};
use crate::error::chain;

/// A partition loop this replica runs.
struct Running {
    epoch: i64,
    /// Tells the loop to stop after its batch in flight.
    stop: watch::Sender<bool>,
    /// Stopping to hand the partition to another replica: release the lease when it ends.
    releasing: bool,
}

impl Consumer {
    /// Runs until `shutdown`: every heartbeat interval, renews this member, works out its fair
    /// share from the live members, releases extra leases (after their loops stop) and claims
    /// missing ones, and runs one loop per lease held. On shutdown the loops finish their
    /// batch in flight, then every lease is released at once, so that the other replicas take
    /// the partitions over on their next heartbeat instead of after the lease lapses.
    pub(super) async fn run_leased(
        self,
        leases: Arc<dyn PartitionLeases>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let topic = self.source.topic().to_owned();
        let me = leases.member_id().to_owned();
        tracing::info!(%topic, member = %me, lease_ttl = ?self.config.lease_ttl, "consuming under partition leases shared with other replicas");
        let mut running: HashMap<i32, Running> = HashMap::new();
        let mut tasks: JoinSet<(i32, i64, PartitionEnd)> = JoinSet::new();
        let mut partitions: Vec<i32> = Vec::new();
        let mut discovered_at: Option<Instant> = None;
        let nudge = self.nudge.clone();
        let nudged = || async {
            match &nudge {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        let mut ticker = tokio::time::interval(self.config.heartbeat_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Arms only pick the event: awaiting inside an arm would hold the shutdown
            // watch's guard across the await.
            let ended = tokio::select! {
                _ = ticker.tick() => None,
                _ = nudged() => {
                    ticker.reset();
                    None
                }
                Some(ended) = tasks.join_next(), if !tasks.is_empty() => Some(ended),
                _ = shutdown.wait_for(|s| *s) => break,
            };
            if let Some(ended) = ended {
                match ended {
                    Ok((partition, epoch, end)) => {
                        self.loop_ended(&*leases, &mut running, partition, epoch, end)
                            .await;
                    }
                    Err(e) => tracing::error!(error = %e, "partition task failed"),
                }
                // Not a heartbeat: only bookkeeping of a loop that ended.
                continue;
            }
            if discovered_at.is_none_or(|t| t.elapsed() >= self.config.discovery_interval) {
                match self.source.partitions().await {
                    Ok(p) => {
                        partitions = p;
                        discovered_at = Some(Instant::now());
                    }
                    Err(SourceError::UnknownTopic(t)) => {
                        tracing::error!(topic = %t, "topic does not exist; create it (or start with --create-topic in development); retrying");
                        self.count_error("unknown_topic");
                    }
                    Err(e) => {
                        tracing::warn!(error = %chain(&e), "cannot list partitions; retrying");
                        self.count_error("broker");
                    }
                }
            }
            self.rebalance(
                &*leases,
                &topic,
                &partitions,
                &mut running,
                &mut tasks,
                &shutdown,
            )
            .await;
        }

        // Shutdown: every loop finishes its batch in flight, then the leases go back.
        for r in running.values() {
            let _ = r.stop.send(true);
        }
        while let Some(ended) = tasks.join_next().await {
            if let Err(e) = ended {
                tracing::error!(error = %e, "partition task failed");
            }
        }
        match leases.leave(&topic).await {
            Ok(()) => {
                let released = running.len();
                if let Some(m) = &self.metrics {
                    m.lease_changes
                        .with_label_values(&["released"])
                        .inc_by(released as u64);
                    m.partitions_owned.set(0);
                }
                tracing::info!(%topic, member = %me, released, "released every partition lease");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot release the partition leases; the other replicas take them over when they lapse")
            }
        }
        self.assignment.write(|s| s.owned.clear());
        tracing::info!(%topic, "consumer stopped");
    }

    /// One heartbeat: renew, then converge on this member's fair share.
    async fn rebalance(
        &self,
        leases: &dyn PartitionLeases,
        topic: &str,
        partitions: &[i32],
        running: &mut HashMap<i32, Running>,
        tasks: &mut JoinSet<(i32, i64, PartitionEnd)>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let membership = match leases
            .heartbeat(topic, partitions, self.config.lease_ttl)
            .await
        {
            Ok(m) => m,
            Err(e) => {
                // Loops go on: if the lease lapses meanwhile, their commits are refused.
                tracing::warn!(error = %e, "heartbeat failed; retrying on the next one");
                self.count_error("database");
                return;
            }
        };
        let mut held: BTreeMap<i32, i64> = membership
            .held
            .iter()
            .map(|l| (l.partition, l.epoch))
            .collect();
        let mut changed = false;

        // Loops whose lease is gone (taken over while this replica was paused or cut off).
        for (p, r) in running.iter_mut() {
            if held.get(p) != Some(&r.epoch) && !*r.stop.borrow() {
                tracing::warn!(
                    partition = p,
                    epoch = r.epoch,
                    "lease on the partition lapsed and was given to another replica; stopping its loop"
                );
                let _ = r.stop.send(true);
                r.releasing = false;
                self.count_lease("lost", 1);
                changed = true;
            }
        }

        let quota = fair_share(&membership.members, leases.member_id(), partitions.len());
        let keeping: Vec<i32> = held
            .keys()
            .copied()
            .filter(|p| running.get(p).is_none_or(|r| !r.releasing))
            .collect();
        if keeping.len() > quota {
            // Hand the highest partitions over: their loops stop after the batch in flight,
            // and the lease is released when they end (see `loop_ended`).
            for p in keeping.iter().rev().take(keeping.len() - quota) {
                let epoch = held[p];
                match running.get_mut(p) {
                    Some(r) => {
                        tracing::info!(
                            partition = p,
                            members = membership.members.len(),
                            "handing the partition over to rebalance"
                        );
                        r.releasing = true;
                        let _ = r.stop.send(true);
                    }
                    None => {
                        self.release(
                            leases,
                            topic,
                            PartitionLease {
                                partition: *p,
                                epoch,
                            },
                        )
                        .await;
                    }
                }
                held.remove(p);
                changed = true;
            }
        } else if keeping.len() < quota {
            match leases.claim(topic, quota - keeping.len()).await {
                Ok(claimed) => {
                    if !claimed.is_empty() {
                        tracing::info!(
                            partitions = ?claimed.iter().map(|l| l.partition).collect::<Vec<_>>(),
                            members = membership.members.len(),
                            "claimed partition leases"
                        );
                        self.count_lease("claimed", claimed.len());
                        changed = true;
                    }
                    held.extend(claimed.iter().map(|l| (l.partition, l.epoch)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming partition leases failed; retrying on the next heartbeat");
                    self.count_error("database");
                }
            }
        }

        for (&p, &epoch) in &held {
            if running.contains_key(&p) || *shutdown.borrow() {
                continue;
            }
            let (stop, rx) = watch::channel(false);
            running.insert(
                p,
                Running {
                    epoch,
                    stop,
                    releasing: false,
                },
            );
            tracing::info!(%topic, partition = p, epoch, "consuming partition");
            let this = self.clone();
            let span = tracing::info_span!("partition", %topic, partition = p, epoch);
            tasks.spawn(
                async move { (p, epoch, this.run_partition(p, Some(epoch), rx).await) }
                    .instrument(span),
            );
        }
        if changed && let Some(m) = &self.metrics {
            m.rebalances.inc();
        }
        self.publish(running, membership.members.len());
    }

    /// Bookkeeping when a partition loop ends: release its lease if it was handed over.
    async fn loop_ended(
        &self,
        leases: &dyn PartitionLeases,
        running: &mut HashMap<i32, Running>,
        partition: i32,
        epoch: i64,
        end: PartitionEnd,
    ) {
        let Some(r) = running.remove(&partition) else {
            return;
        };
        if let Some(m) = &self.metrics {
            let label = partition.to_string();
            let _ = m.lag.remove_label_values(&[&label]);
            let _ = m.next_offset.remove_label_values(&[&label]);
        }
        match end {
            PartitionEnd::LeaseLost => {
                if !*r.stop.borrow() {
                    self.count_lease("lost", 1);
                }
                tracing::warn!(
                    partition,
                    epoch,
                    "gave the partition up: its lease is held by another replica now"
                );
            }
            PartitionEnd::Stopped if r.releasing => {
                let topic = self.source.topic();
                self.release(leases, topic, PartitionLease { partition, epoch })
                    .await;
            }
            PartitionEnd::Stopped => {}
        }
        let members = self.assignment.members();
        self.publish(running, members);
    }

    async fn release(&self, leases: &dyn PartitionLeases, topic: &str, lease: PartitionLease) {
        // A failed release costs only time: the lease lapses with this member or is released
        // on shutdown; retried here briefly because the other replica waits for it.
        let mut wait = self.config.backoff_min;
        for _ in 0..3 {
            match leases.release(topic, lease).await {
                Ok(()) => {
                    tracing::info!(
                        partition = lease.partition,
                        epoch = lease.epoch,
                        "released the partition lease"
                    );
                    self.count_lease("released", 1);
                    return;
                }
                Err(e) => {
                    tracing::warn!(partition = lease.partition, error = %e, "releasing the partition lease failed");
                    self.count_error("database");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.config.backoff_max);
                }
            }
        }
    }

    fn count_lease(&self, change: &str, n: usize) {
        if let Some(m) = &self.metrics {
            m.lease_changes
                .with_label_values(&[change])
                .inc_by(n as u64);
        }
    }

    /// Shares what this replica consumes now (for `/readyz` and the metrics).
    fn publish(&self, running: &HashMap<i32, Running>, members: usize) {
        let owned: BTreeMap<i32, Option<i64>> = running
            .iter()
            .filter(|(_, r)| !*r.stop.borrow())
            .map(|(p, r)| (*p, Some(r.epoch)))
            .collect();
        if let Some(m) = &self.metrics {
            m.partitions_owned.set(owned.len() as i64);
        }
        self.assignment.write(|s| {
            s.owned = owned;
            s.members = members;
        });
    }
}
