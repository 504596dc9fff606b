//! Word of how a response's delivery ended, for modules that report on a
//! request after its pipeline is over: HttpLogging's `sc-bytes` and
//! `time-taken`, which IIS logs once HTTP.sys has sent the response, and
//! nginx once the last byte went to the socket.
//!
//! The pipeline ends at the final send, when the response is handed to the
//! connection; a large file or a slow client may take much longer to
//! receive it, or leave halfway. A module asks to be told with
//! [`HttpContext::on_response_delivered`](crate::HttpContext::on_response_delivered);
//! the final send's [`Output`](crate::Output) carries the calls to the
//! server, which makes them once the connection is done with the response.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// How the connection finished with a request's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseDelivery {
    /// Entity bytes the connection took to send (the head is not counted).
    /// Counted as the connection takes them from the response, so a client
    /// that leaves may have received less by what the connection held:
    /// its write buffer, and one file range sent without copying.
    pub body_bytes: u64,
    /// The whole response went: false when the client left before its
    /// end, a timeout or a shutdown ended the exchange, or the response was
    /// cut short or reset.
    pub whole: bool,
}

impl ResponseDelivery {
    /// A response that never reached a connection.
    pub const NOT_SENT: Self = Self {
        body_bytes: 0,
        whole: false,
    };
}

type Watcher = Box<dyn FnOnce(ResponseDelivery) + Send>;

/// The calls waiting for a response's delivery. Each is made exactly once:
/// by [`DeliveryWatchers::delivered`], or, when the watchers are dropped
/// without it (the response never reached a connection), with
/// [`ResponseDelivery::NOT_SENT`]. A call that panics is logged and the
/// rest are still made: it runs on a connection's behalf, where a module's
/// panic must not end anything but its own call.
///
/// One pointer wide, since the final send's output and the response carry
/// it by value on every request and few have any; one allocation for the
/// usual one call.
#[derive(Default)]
pub struct DeliveryWatchers(Option<Box<WatcherList>>);

struct WatcherList {
    first: Watcher,
    rest: Vec<Watcher>,
}

impl DeliveryWatchers {
    /// Adds a call.
    pub(crate) fn push(&mut self, watch: Watcher) {
        match &mut self.0 {
            Some(list) => list.rest.push(watch),
            None => {
                self.0 = Some(Box::new(WatcherList {
                    first: watch,
                    rest: Vec::new(),
                }))
            }
        }
    }

    /// Whether nobody waits (the usual case: checked before any work).
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Makes the calls with how the delivery ended.
    pub fn delivered(mut self, delivery: ResponseDelivery) {
        self.call_all(delivery);
    }

    fn call_all(&mut self, delivery: ResponseDelivery) {
        let Some(list) = self.0.take() else {
            return;
        };
        let WatcherList { first, rest } = *list;
        for watch in std::iter::once(first).chain(rest) {
            if catch_unwind(AssertUnwindSafe(|| watch(delivery))).is_err() {
                tracing::error!("a module's response delivery watcher panicked");
            }
        }
    }
}

impl Drop for DeliveryWatchers {
    /// Inlined: every request's output and response drop one, nearly
    /// always empty.
    #[inline]
    fn drop(&mut self) {
        if self.0.is_some() {
            self.not_sent();
        }
    }
}

impl DeliveryWatchers {
    #[cold]
    fn not_sent(&mut self) {
        self.call_all(ResponseDelivery::NOT_SENT);
    }
}

impl std::fmt::Debug for DeliveryWatchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.0.as_ref().map_or(0, |list| 1 + list.rest.len());
        write!(f, "DeliveryWatchers({count})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recorder() -> (Arc<Mutex<Vec<ResponseDelivery>>>, Watcher) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        (seen, Box::new(move |d| into.lock().unwrap().push(d)))
    }

    #[test]
    fn each_call_is_made_once_with_the_outcome() {
        let (seen, watch) = recorder();
        let mut watchers = DeliveryWatchers::default();
        watchers.push(Box::new(|_| panic!("a module's mistake")));
        watchers.push(watch);
        let outcome = ResponseDelivery {
            body_bytes: 7,
            whole: true,
        };
        watchers.delivered(outcome);
        assert_eq!(*seen.lock().unwrap(), [outcome]);
    }

    #[test]
    fn watchers_dropped_unsent_are_told_so() {
        let (seen, watch) = recorder();
        let mut watchers = DeliveryWatchers::default();
        watchers.push(watch);
        drop(watchers);
        assert_eq!(*seen.lock().unwrap(), [ResponseDelivery::NOT_SENT]);
    }
}
