//! The namespace's generation: adopted from INCR replies, pub/sub messages and a poll.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use umcp_redis::Redis;
use umcp_redis::fred::clients::SubscriberClient;
use umcp_redis::fred::interfaces::{ClientLike, EventInterface, KeysInterface, PubsubInterface};
use umcp_redis::fred::types::Message;
use umcp_redis::fred::types::config::Server;

use crate::{Inner, bump};

/// How often a background task checks that its cache still exists while Redis is silent.
const LIVENESS_TICK: Duration = Duration::from_secs(1);
/// How long the subscriber waits for its first connections before following reconnects.
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(2);
/// Pause between attempts to subscribe while Redis is unreachable.
const SUBSCRIBE_RETRY: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub(crate) struct GenState {
    generation: u64,
    /// When a read of Redis that showed `generation` was issued (`None`: not since start or
    /// since the last reconnect).
    confirmed_at: Option<Instant>,
    /// When `generation` last changed: a read issued before it may be older than the value.
    changed_at: Instant,
    /// A write through this instance could not bump the shared generation: the poller keeps
    /// trying, so the other replicas learn of it as soon as this one reaches Redis again.
    pending_bump: bool,
}

impl GenState {
    pub(crate) fn new() -> Self {
        Self {
            generation: 0,
            confirmed_at: None,
            changed_at: Instant::now(),
            pending_bump: false,
        }
    }

    pub(crate) fn bump_local(&mut self) {
        self.generation += 1;
        self.changed_at = Instant::now();
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn confirmed_within(&self, bound: Duration) -> bool {
        self.confirmed_at.is_some_and(|at| at.elapsed() <= bound)
    }

    /// Takes `seen`, read from Redis by a request issued at `issued`; returns whether the
    /// generation changed. A smaller value is taken too (Redis lost its data and restarted
    /// counting), unless the read was issued before the last change (then it is just late).
    fn observe(&mut self, seen: u64, issued: Instant) -> bool {
        if seen == self.generation {
            self.confirmed_at = Some(self.confirmed_at.map_or(issued, |at| at.max(issued)));
            return false;
        }
        if seen < self.generation && issued < self.changed_at {
            return false;
        }
        self.generation = seen;
        self.changed_at = Instant::now();
        self.confirmed_at = Some(issued);
        true
    }

    /// A published value: newer ones are taken; it confirms nothing (later writes may exist).
    fn announce(&mut self, seen: u64) -> bool {
        if seen <= self.generation {
            return false;
        }
        self.generation = seen;
        self.changed_at = Instant::now();
        true
    }
}

impl Inner {
    pub(crate) fn generation(&self) -> u64 {
        self.state.lock().generation
    }

    /// One GET of the generation; a missing key is generation 0.
    pub(crate) async fn refresh_generation(&self) {
        let Some(redis) = &self.redis else { return };
        let key = self.gen_key.clone();
        let issued = Instant::now();
        match redis
            .call("cache.gen", |c| async move {
                c.get::<Option<u64>, _>(key).await
            })
            .await
        {
            Ok(seen) => {
                let changed = self.state.lock().observe(seen.unwrap_or(0), issued);
                if changed {
                    self.clear_l1();
                }
            }
            Err(error) => {
                bump(&self.counters.redis_errors);
                tracing::debug!(namespace = %self.namespace, %error, "generation read failed");
            }
        }
    }

    /// INCR, adopt, publish. The publish only speeds the others up (they poll anyway), so its
    /// failure is counted and logged, not returned.
    pub(crate) async fn bump_shared(&self, redis: &Redis) {
        let key = self.gen_key.clone();
        let issued = Instant::now();
        let incr = redis
            .call("cache.incr", |c| async move { c.incr::<u64, _>(key).await })
            .await;
        let seen = match incr {
            Ok(seen) => seen,
            Err(error) => {
                bump(&self.counters.redis_errors);
                tracing::warn!(namespace = %self.namespace, %error, "generation bump failed; retrying until redis answers");
                let mut state = self.state.lock();
                state.confirmed_at = None;
                state.pending_bump = true;
                drop(state);
                self.clear_l1();
                return;
            }
        };
        let changed = {
            let mut state = self.state.lock();
            state.pending_bump = false;
            state.observe(seen, issued)
        };
        if changed {
            self.clear_l1();
        }
        let channel = self.channel.clone();
        let clustered = redis.is_clustered();
        let published = redis
            .call("cache.publish", |c| async move {
                if clustered {
                    c.spublish::<i64, _, _>(channel, seen).await
                } else {
                    c.publish::<i64, _, _>(channel, seen).await
                }
            })
            .await;
        if let Err(error) = published {
            bump(&self.counters.redis_errors);
            tracing::debug!(namespace = %self.namespace, %error, "generation publish failed");
        }
    }

    fn on_message(&self, seen: u64) {
        if self.state.lock().announce(seen) {
            self.clear_l1();
        }
    }

    /// Messages may have been missed while disconnected: forget everything, re-read.
    async fn on_reconnect(&self) {
        self.state.lock().confirmed_at = None;
        self.clear_l1();
        self.refresh_generation().await;
    }
}

/// Re-reads the generation every `generation_poll_ms` (a lost message cannot keep a replica
/// stale past the bound), first retrying a bump that failed.
pub(crate) fn spawn_poller(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    let every = inner.config.generation_poll();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            let pending = inner.state.lock().pending_bump;
            if let (true, Some(redis)) = (pending, inner.redis.clone()) {
                inner.bump_shared(&redis).await;
            }
            inner.refresh_generation().await;
        }
    });
}

/// One subscriber per cache: SSUBSCRIBE on a cluster (the channel's shard), SUBSCRIBE on a
/// standalone server; fred resubscribes after reconnects (`manage_subscriptions`).
pub(crate) fn spawn_subscriber(inner: &Arc<Inner>) {
    let Some(redis) = inner.redis.clone() else {
        return;
    };
    let subscriber = match redis.subscriber() {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(namespace = %inner.namespace, %error, "no generation subscriber; polling only");
            return;
        }
    };
    let weak = Arc::downgrade(inner);
    let channel = inner.channel.clone();
    tokio::spawn(async move {
        let mut messages = subscriber.message_rx();
        let _connection = subscriber.connect();
        // fred reports every node's first connection as a reconnect too; only later ones mean
        // messages may have been missed (a first connection that comes late costs one flush)
        let _ = tokio::time::timeout(FIRST_CONNECT_WAIT, subscriber.wait_for_connect()).await;
        let mut reconnects = subscriber.reconnect_rx();
        if !subscribe(&subscriber, &channel, redis.is_clustered(), &weak).await {
            return;
        }
        let _manager = subscriber.manage_subscriptions();
        follow(&weak, &mut messages, &mut reconnects).await;
        let _ = subscriber.quit().await;
    });
}

/// Retries until subscribed; false when the cache is gone first.
async fn subscribe(
    subscriber: &SubscriberClient,
    channel: &str,
    clustered: bool,
    weak: &Weak<Inner>,
) -> bool {
    loop {
        let result = if clustered {
            subscriber.ssubscribe(channel).await
        } else {
            subscriber.subscribe(channel).await
        };
        match result {
            Ok(()) => return true,
            Err(error) => tracing::debug!(%error, "generation subscribe failed; retrying"),
        }
        tokio::time::sleep(SUBSCRIBE_RETRY).await;
        if weak.strong_count() == 0 {
            return false;
        }
    }
}

async fn follow(
    weak: &Weak<Inner>,
    messages: &mut tokio::sync::broadcast::Receiver<Message>,
    reconnects: &mut tokio::sync::broadcast::Receiver<Server>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(message) => {
                    let Some(inner) = weak.upgrade() else { return };
                    match message.value.convert::<u64>() {
                        Ok(seen) => inner.on_message(seen),
                        Err(error) => tracing::warn!(%error, "bad generation message"),
                    }
                }
                // missed messages: the next poll catches up
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            reconnect = reconnects.recv() => match reconnect {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    let Some(inner) = weak.upgrade() else { return };
                    tracing::info!(namespace = %inner.namespace, "generation subscriber reconnected; l1 cleared");
                    inner.on_reconnect().await;
                }
                Err(RecvError::Closed) => return,
            },
            () = tokio::time::sleep(LIVENESS_TICK) => {
                if weak.strong_count() == 0 {
                    return;
                }
            }
        }
    }
}
