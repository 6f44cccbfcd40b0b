//! The accept loop: many guests at once, a cap on how many, and a graceful stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Semaphore};
use tracing::Instrument;
use xbridge_proto::handshake::{Refusal, RefuseCode};
use xbridge_proto::stream::BoxStream;

use crate::listener::Listener;
use crate::session::{self, Context};

/// Limits on the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Guest connections served at once; more are refused with `busy`.
    pub max_connections: usize,
    /// How long live connections may continue after a stop is requested.
    pub grace: Duration,
}

/// Serves every listener until `shutdown` completes, then waits up to `limits.grace` for live
/// connections before returning.
pub async fn run(
    listeners: Vec<Listener>,
    ctx: Arc<Context>,
    limits: Limits,
    shutdown: impl Future,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Every session holds a clone; when all are dropped, `done` yields None.
    let (alive, mut done) = mpsc::channel::<()>(1);
    let accept_all = async {
        let mut loops = tokio::task::JoinSet::new();
        for listener in listeners {
            let (ctx, slots, alive) = (Arc::clone(&ctx), Arc::clone(&slots), alive.clone());
            loops.spawn(accept_loop(
                listener,
                ctx,
                slots,
                alive,
                limits.max_connections,
            ));
        }
        while loops.join_next().await.is_some() {}
    };
    tokio::select! {
        () = accept_all => tracing::warn!("every listener failed; stopping"),
        _ = shutdown => tracing::info!("stop requested; no new guests accepted"),
    }
    drop(alive);
    // Accept loops hold clones too; they were dropped when `accept_all` was.
    if tokio::time::timeout(limits.grace, done.recv())
        .await
        .is_err()
    {
        tracing::info!(
            "grace period of {:?} over; closing remaining connections",
            limits.grace
        );
    }
}

async fn accept_loop(
    listener: Listener,
    ctx: Arc<Context>,
    slots: Arc<Semaphore>,
    alive: mpsc::Sender<()>,
    cap: usize,
) {
    let place = listener.describe();
    tracing::info!("listening on {place}");
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(e) => {
                // Typically EMFILE: wait for connections to finish rather than spin.
                tracing::warn!("accepting on {place} failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "refusing guest: already serving {cap} connections (max_connections)");
            tokio::spawn(refuse_busy(stream, cap));
            continue;
        };
        let (ctx, alive) = (Arc::clone(&ctx), alive.clone());
        let span = tracing::info_span!("guest", %peer);
        tokio::spawn(async move {
            match session::serve(ctx, stream).await {
                Ok(t) => tracing::info!(%peer, to_host = t.to_host, to_guest = t.to_guest, "guest disconnected"),
                Err(e) => tracing::warn!(%peer, "guest session ended: {e}"),
            }
            drop((slot, alive));
        }.instrument(span));
    }
}

async fn refuse_busy(mut stream: BoxStream, cap: usize) {
    let refusal = Refusal::new(
        RefuseCode::Busy,
        format!("the host agent is serving its maximum of {cap} connections; close some guest X clients or raise max_connections"),
    );
    let _ =
        tokio::time::timeout(Duration::from_secs(1), stream.write_all(&refusal.to_line())).await;
}
