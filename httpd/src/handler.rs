//! The application's side: the handler the server thread calls with each request, and the
//! responder that answers from any thread. Both the public face (`server`) and the loop
//! (`reactor`) use them; neither owns them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use mio::Waker;

use crate::request::{Request, RequestId};
use crate::response::Response;

/// The application's side of the server.
///
/// [`Handler::handle`] is called on the server thread, once per complete
/// request. It MUST NOT block: it may answer at once through `responder`, or
/// keep the [`RequestId`] (and a clone of the [`Responder`]) and answer later
/// from any thread. Until it is answered (or `response_timeout` passes), the
/// request's connection reads nothing more. A panic in `handle` stops the
/// server; [`ServerHandle::shutdown`](crate::ServerHandle::shutdown) then
/// reports [`HttpdError::Panicked`](crate::HttpdError::Panicked).
pub trait Handler: Send + 'static {
    fn handle(&mut self, request: Request, responder: &Responder);
}

impl<F> Handler for F
where
    F: FnMut(Request, &Responder) + Send + 'static,
{
    fn handle(&mut self, request: Request, responder: &Responder) {
        self(request, responder)
    }
}

/// Answers waiting for the server thread, per allowed connection: the queue holds
/// `RESPONSES_QUEUED_PER_CONNECTION * connections_max` answers. Every open connection has
/// at most one request in flight, so one answer per connection is the most live answers
/// there can be; the second half leaves room for answers to requests whose connections
/// have gone (an application may still hold those). The server thread applies every
/// queued answer on each turn and each answer wakes it, so the queue fills only while
/// that thread is stalled. Past it an answer is dropped and counted in
/// [`Stats::responses_dropped`](crate::Stats::responses_dropped): its client gets the 503
/// of `response_timeout`, and the answering thread never waits.
pub const RESPONSES_QUEUED_PER_CONNECTION: usize = 2;

/// Answers requests, from any thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Responder {
    pub(crate) tx: mpsc::SyncSender<(RequestId, Response)>,
    pub(crate) waker: Arc<Waker>,
    /// Answers refused by the full queue; the server thread publishes it in its stats.
    pub(crate) dropped: Arc<AtomicU64>,
}

impl Responder {
    /// Queues `response` for request `id` and wakes the server thread. Never
    /// blocks. An answer for a request whose connection has gone away, that
    /// timed out, or that was already answered is dropped there and counted
    /// in [`Stats::responses_stale`](crate::Stats::responses_stale); one that
    /// finds the queue full is dropped here (see
    /// [`RESPONSES_QUEUED_PER_CONNECTION`]); after shutdown it is dropped
    /// silently.
    pub fn respond(&self, id: RequestId, response: Response) {
        match self.tx.try_send((id, response)) {
            Ok(()) => {
                // A failed wake means the poller is gone, and so is the server.
                let _ = self.waker.wake();
            }
            Err(mpsc::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {}
        }
    }
}
