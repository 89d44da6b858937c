//! Batched writes: whatever arrived while the previous transaction ran is committed together,
//! so that many concurrent writers cost one commit (one WAL flush on Postgres, one turn at
//! SQLite's single writer) instead of one each. The write function is handed the whole batch, so
//! that it can also use set-based statements (one multi-row insert rather than one per item).
//! Each item is still answered only after its own data is committed. Should a batch fail, its
//! items are written again one by one, so that one bad item cannot fail the others.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use super::{Db, DbConnection, StoreError};

/// The most items written in one transaction.
const BATCH: usize = 128;

/// Why an item was not written.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Too many items are waiting to be written: the caller should retry later.
    #[error("too many writes are waiting")]
    Full,
    /// The writer threads are gone (the process is stopping).
    #[error("the bridge is stopping")]
    Closed,
    /// The write failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes a batch of items in the caller's transaction and answers one output per item, in order.
type Write<I, O> = dyn Fn(&mut DbConnection, &[&I]) -> Result<Vec<O>, StoreError> + Send + Sync;
type Reply<O> = tokio::sync::oneshot::Sender<Result<O, StoreError>>;

/// A queue of items written by `write`, in batches, on writer threads of their own.
pub struct BatchWriter<I, O> {
    sender: SyncSender<(I, Reply<O>)>,
}

impl<I, O> Clone for BatchWriter<I, O> {
    fn clone(&self) -> Self {
        BatchWriter {
            sender: self.sender.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> BatchWriter<I, O> {
    /// Starts `writers` threads called `name` writing batches of items with `write` on `db` (1
    /// suits SQLite, which has one writer anyway), with room for `capacity` waiting items.
    /// `write` must answer one output per item, in order. The threads end when every clone of
    /// the writer is dropped.
    pub fn start(
        name: &str,
        db: Db,
        writers: usize,
        capacity: usize,
        write: impl Fn(&mut DbConnection, &[&I]) -> Result<Vec<O>, StoreError> + Send + Sync + 'static,
    ) -> Self {
        let (sender, receiver) = std::sync::mpsc::sync_channel(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let write: Arc<Write<I, O>> = Arc::new(write);
        for n in 0..writers.max(1) {
            let (db, receiver, write) = (db.clone(), receiver.clone(), write.clone());
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || write_batches(&db, &receiver, &*write))
                .expect("cannot start a writer thread");
        }
        BatchWriter { sender }
    }

    /// Writes `item` and answers once it is committed.
    pub async fn write(&self, item: I) -> Result<O, BatchError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.sender.try_send((item, reply)).map_err(|e| match e {
            TrySendError::Full(_) => BatchError::Full,
            TrySendError::Disconnected(_) => BatchError::Closed,
        })?;
        Ok(answer.await.map_err(|_| BatchError::Closed)??)
    }
}

fn write_batches<I, O>(db: &Db, receiver: &Mutex<Receiver<(I, Reply<O>)>>, write: &Write<I, O>) {
    loop {
        let mut batch = {
            let receiver = receiver.lock().unwrap_or_else(|p| p.into_inner());
            let Ok(first) = receiver.recv() else {
                return; // every sender is gone: the application has stopped
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let items: Vec<&I> = batch.iter().map(|(item, _)| item).collect();
        let written = db.write(|conn| write_checked(conn, write, &items));
        match written {
            Ok(results) => {
                for ((_, reply), result) in batch.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) if batch.len() == 1 => {
                let (_, reply) = batch.remove(0);
                let _ = reply.send(Err(e));
            }
            // The database is out of reach: every item would fail the same way, each after a
            // wait; they are answered at once (503: the senders retry).
            Err(e) if e.is_unavailable() => answer_unavailable(batch, &e),
            Err(_) => {
                let mut items = batch.into_iter();
                while let Some((item, reply)) = items.next() {
                    let written = db.write(|conn| write_checked(conn, write, &[&item]));
                    match written {
                        Err(e) if e.is_unavailable() => {
                            let _ = reply.send(Err(unavailable_again(&e)));
                            answer_unavailable(items.collect(), &e);
                            break;
                        }
                        written => {
                            if let Some(result) = written.map(|o| o.into_iter().next()).transpose()
                            {
                                let _ = reply.send(result);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Answers every item of `batch` with the outage `e`.
fn answer_unavailable<I, O>(batch: Vec<(I, Reply<O>)>, e: &StoreError) {
    for (_, reply) in batch {
        let _ = reply.send(Err(unavailable_again(e)));
    }
}

/// The same outage, for another item (a store error is not `Clone`: its cause is kept as text).
fn unavailable_again(e: &StoreError) -> StoreError {
    match e {
        StoreError::Busy => StoreError::Busy,
        other => StoreError::Connect(other.to_string()),
    }
}

/// Runs `write`; an item it left unanswered (a bug) gets no reply, which its caller sees as
/// [`BatchError::Closed`], rather than bringing the writer thread down.
fn write_checked<I, O>(
    conn: &mut DbConnection,
    write: &Write<I, O>,
    items: &[&I],
) -> Result<Vec<O>, StoreError> {
    let outputs = write(conn, items)?;
    debug_assert_eq!(outputs.len(), items.len(), "one output per item");
    Ok(outputs)
}
