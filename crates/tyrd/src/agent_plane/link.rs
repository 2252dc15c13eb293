//! The link between the stream task and the spool, which the main loop owns: the stream asks
//! for pending records and reports acknowledgements; the main loop answers and publishes the
//! spool's last `seq` after each change.

use tokio::sync::{mpsc, oneshot, watch};

use crate::pipeline::spool::{Spool, SpoolRecord};

/// Records read from the spool, with their `seq`.
pub type Pending = Vec<(u64, SpoolRecord)>;

/// A request of the stream task to the spool's owner.
#[derive(Debug)]
pub enum SpoolRequest {
    /// Up to `max` unacknowledged records from `from` on.
    Pending {
        /// First wanted seq (older unacknowledged ones are skipped).
        from: u64,
        /// At most this many.
        max: usize,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Pending, String>>,
    },
    /// The server durably stored every record up to this seq.
    Ack(u64),
}

/// The main loop's end.
#[derive(Debug)]
pub struct SpoolServer {
    requests: mpsc::Receiver<SpoolRequest>,
    last_seq: watch::Sender<u64>,
}

/// The stream task's end.
#[derive(Debug, Clone)]
pub struct SpoolClient {
    requests: mpsc::Sender<SpoolRequest>,
    /// The spool's last seq, as last published.
    pub last_seq: watch::Receiver<u64>,
}

/// A connected pair; `last_seq` is the spool's current last seq.
pub fn pair(last_seq: u64) -> (SpoolServer, SpoolClient) {
    let (req_tx, req_rx) = mpsc::channel(16);
    let (seq_tx, seq_rx) = watch::channel(last_seq);
    (
        SpoolServer {
            requests: req_rx,
            last_seq: seq_tx,
        },
        SpoolClient {
            requests: req_tx,
            last_seq: seq_rx,
        },
    )
}

impl SpoolServer {
    /// The next request; pending forever once the stream task is gone.
    pub async fn next(&mut self) -> SpoolRequest {
        match self.requests.recv().await {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }

    /// Answers `request` from `spool`. An acknowledgement that cannot be persisted is
    /// logged: the records are sent again later, which the server ignores.
    pub fn serve(&self, request: SpoolRequest, spool: &mut Spool) {
        match request {
            SpoolRequest::Pending { from, max, reply } => {
                let _ = reply.send(spool.pending(from, max).map_err(|e| e.to_string()));
            }
            SpoolRequest::Ack(seq) => {
                if let Err(e) = spool.ack(seq) {
                    tracing::error!(seq, "cannot record the acknowledgement: {e}");
                }
            }
        }
    }

    /// Publishes the spool's last seq (wakes the stream task when it grew).
    pub fn publish(&self, last_seq: u64) {
        self.last_seq.send_if_modified(|s| {
            let changed = *s != last_seq;
            *s = last_seq;
            changed
        });
    }
}

impl SpoolClient {
    /// Up to `max` unacknowledged records from `from` on; `Err` when the spool failed or the
    /// main loop is gone.
    pub async fn pending(&self, from: u64, max: usize) -> Result<Pending, String> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(SpoolRequest::Pending { from, max, reply })
            .await
            .map_err(|_| "the spool is closed".to_owned())?;
        rx.await.map_err(|_| "the spool is closed".to_owned())?
    }

    /// Reports that the server stored everything up to `seq`.
    pub async fn ack(&self, seq: u64) {
        let _ = self.requests.send(SpoolRequest::Ack(seq)).await;
    }
}
