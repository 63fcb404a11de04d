//! Ready push work, queued per origin and handed out under a per-origin cap.
//!
//! This is the rule that keeps one slow or hostile push service from delaying the others:
//! no origin has more than `cap` requests in flight, and work past the cap waits in its
//! origin's queue without holding a worker. Origins with work and a free permit take
//! turns (round robin), so a long queue at one origin does not make another's single
//! push wait behind it either. Within an origin, work leaves in order; across origins,
//! every [`Class::Reconnect`] item goes before any [`Class::NewMail`] one.
//!
//! Pure: no clock, no threads. The scheduler calls [`OriginQueues::pop`] when a sender
//! is idle and MUST call [`OriginQueues::release`] once for every item popped, when its
//! request ends or at once if the item turns out to need no request.

use std::collections::{HashMap, VecDeque};

/// Priority of ready work; lower goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Reconnect = 0,
    NewMail = 1,
}

const CLASSES: [Class; 2] = [Class::Reconnect, Class::NewMail];

#[derive(Debug)]
struct Origin<T> {
    queues: [VecDeque<T>; 2],
    /// Listed in `runnable[class]`; at most once each.
    listed: [bool; 2],
    in_flight: usize,
}

impl<T> Origin<T> {
    fn new() -> Self {
        Self {
            queues: [VecDeque::new(), VecDeque::new()],
            listed: [false; 2],
            in_flight: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.in_flight == 0 && self.queues.iter().all(VecDeque::is_empty)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct OriginQueues<T> {
    cap: usize,
    origins: HashMap<String, Origin<T>>,
    /// Origins that may have work of a class and a free permit, in turn order. Entries
    /// can be stale (the origin filled up or emptied since); `pop` skips them.
    runnable: [VecDeque<String>; 2],
}

impl<T> OriginQueues<T> {
    /// `cap`: requests in flight per origin; at least 1.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            origins: HashMap::new(),
            runnable: [VecDeque::new(), VecDeque::new()],
        }
    }

    /// Queues `item` behind the origin's other work of its class.
    pub fn push_back(&mut self, origin: &str, class: Class, item: T) {
        self.origin(origin).queues[class as usize].push_back(item);
        self.list(origin, class);
    }

    /// Queues `item` ahead of the origin's other work of its class (a retry due now).
    pub fn push_front(&mut self, origin: &str, class: Class, item: T) {
        self.origin(origin).queues[class as usize].push_front(item);
        self.list(origin, class);
    }

    /// The next item and its origin, taking one of that origin's permits: reconnect work
    /// first, origins in turn, `None` when every origin with work is at its cap.
    pub fn pop(&mut self) -> Option<(String, T)> {
        for class in CLASSES {
            let c = class as usize;
            while let Some(key) = self.runnable[c].pop_front() {
                let cap = self.cap;
                let Some(origin) = self.origins.get_mut(&key) else {
                    continue;
                };
                origin.listed[c] = false;
                if origin.in_flight >= cap {
                    // Listed again by `release`.
                    continue;
                }
                let Some(item) = origin.queues[c].pop_front() else {
                    continue;
                };
                origin.in_flight += 1;
                if !origin.queues[c].is_empty() && origin.in_flight < cap {
                    origin.listed[c] = true;
                    self.runnable[c].push_back(key.clone());
                }
                return Some((key, item));
            }
        }
        None
    }

    /// Gives back a permit taken by [`OriginQueues::pop`].
    pub fn release(&mut self, origin: &str) {
        let Some(o) = self.origins.get_mut(origin) else {
            debug_assert!(false, "released a permit of an unknown origin");
            return;
        };
        debug_assert!(o.in_flight > 0, "released more permits than taken");
        o.in_flight = o.in_flight.saturating_sub(1);
        if o.is_empty() {
            self.origins.remove(origin);
            return;
        }
        for class in CLASSES {
            self.list(origin, class);
        }
    }

    /// Whether any waiting item matches `f`.
    pub fn any(&self, f: impl Fn(&T) -> bool) -> bool {
        self.origins
            .values()
            .any(|o| o.queues.iter().any(|q| q.iter().any(&f)))
    }

    /// Requests in flight to `origin`.
    #[cfg(test)]
    pub fn in_flight(&self, origin: &str) -> usize {
        self.origins.get(origin).map_or(0, |o| o.in_flight)
    }

    /// Items waiting, all origins.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.origins
            .values()
            .map(|o| o.queues.iter().map(VecDeque::len).sum::<usize>())
            .sum()
    }

    fn origin(&mut self, origin: &str) -> &mut Origin<T> {
        if !self.origins.contains_key(origin) {
            self.origins.insert(origin.to_owned(), Origin::new());
        }
        self.origins.get_mut(origin).expect("inserted just above")
    }

    /// Puts the origin in the turn order of `class` if it has work of it and a permit.
    fn list(&mut self, origin: &str, class: Class) {
        let c = class as usize;
        let cap = self.cap;
        let Some(o) = self.origins.get_mut(origin) else {
            return;
        };
        if !o.listed[c] && !o.queues[c].is_empty() && o.in_flight < cap {
            o.listed[c] = true;
            self.runnable[c].push_back(origin.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut OriginQueues<u32>) -> Vec<(String, u32)> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn an_origin_gets_at_most_its_cap_and_the_rest_wait() {
        let mut q = OriginQueues::new(2);
        for i in 0..5 {
            q.push_back("slow", Class::NewMail, i);
        }
        q.push_back("fast", Class::NewMail, 100);
        let got = drain(&mut q);
        assert_eq!(
            got,
            [
                ("slow".to_owned(), 0),
                ("fast".to_owned(), 100),
                ("slow".to_owned(), 1)
            ]
        );
        assert_eq!((q.in_flight("slow"), q.waiting()), (2, 3));
        q.release("slow");
        assert_eq!(q.pop(), Some(("slow".to_owned(), 2)));
        assert_eq!(q.pop(), None, "at the cap again");
        q.release("fast");
        assert_eq!(q.in_flight("fast"), 0);
    }

    #[test]
    fn reconnects_go_first_and_origins_take_turns() {
        let mut q = OriginQueues::new(10);
        q.push_back("a", Class::NewMail, 1);
        q.push_back("a", Class::NewMail, 2);
        q.push_back("b", Class::NewMail, 3);
        q.push_back("b", Class::Reconnect, 4);
        q.push_front("a", Class::Reconnect, 5);
        let order: Vec<u32> = drain(&mut q).into_iter().map(|(_, i)| i).collect();
        assert_eq!(order, [4, 5, 1, 3, 2]);
    }

    #[test]
    fn a_cap_shared_by_both_classes() {
        let mut q = OriginQueues::new(1);
        q.push_back("a", Class::NewMail, 1);
        q.push_back("a", Class::Reconnect, 2);
        assert_eq!(q.pop(), Some(("a".to_owned(), 2)));
        assert_eq!(q.pop(), None);
        q.release("a");
        assert_eq!(q.pop(), Some(("a".to_owned(), 1)));
        q.release("a");
        assert_eq!((q.waiting(), q.in_flight("a")), (0, 0));
        assert!(q.origins.is_empty(), "an idle origin leaves no state");
    }

    #[test]
    fn a_zero_cap_is_one() {
        let mut q = OriginQueues::new(0);
        q.push_back("a", Class::NewMail, 1);
        assert!(q.pop().is_some());
    }
}
