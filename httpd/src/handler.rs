//! The application's side: the handler the server thread calls with each request, and the
//! responder that answers from any thread. Both the public face (`server`) and the loop
//! (`reactor`) use them; neither owns them.

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

/// Answers requests, from any thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Responder {
    pub(crate) tx: mpsc::Sender<(RequestId, Response)>,
    pub(crate) waker: Arc<Waker>,
}

impl Responder {
    /// Queues `response` for request `id` and wakes the server thread. Never
    /// blocks. An answer for a request whose connection has gone away, that
    /// timed out, or that was already answered is dropped there and counted
    /// in [`Stats::responses_stale`](crate::Stats::responses_stale); after
    /// shutdown it is dropped silently.
    pub fn respond(&self, id: RequestId, response: Response) {
        if self.tx.send((id, response)).is_ok() {
            // A failed wake means the poller is gone, and so is the server.
            let _ = self.waker.wake();
        }
    }
}
