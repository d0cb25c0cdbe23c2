//! A worker's end of a bounded channel to a service thread (`store`,
//! `cluster`): a message that does not fit waits here, in order (once
//! something waits, everything after it waits too), and the worker stops
//! reading sockets while anything waits (`congested`), so TCP backpressure
//! reaches the producers. `flush`, once per loop iteration, moves what
//! waits into the channel as room allows. A closed channel (its thread has
//! stopped at shutdown) takes nothing and keeps nothing.

use std::collections::VecDeque;

/// What `try_send` found.
pub enum Refused<T> {
    Full(T),
    Closed,
}

/// A bounded channel's non-blocking send.
pub trait TrySend<T> {
    fn try_send_one(&self, msg: T) -> Result<(), Refused<T>>;
}

impl<T> TrySend<T> for crossbeam_channel::Sender<T> {
    fn try_send_one(&self, msg: T) -> Result<(), Refused<T>> {
        self.try_send(msg).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(m) => Refused::Full(m),
            crossbeam_channel::TrySendError::Disconnected(_) => Refused::Closed,
        })
    }
}

impl<T> TrySend<T> for tokio::sync::mpsc::Sender<T> {
    fn try_send_one(&self, msg: T) -> Result<(), Refused<T>> {
        self.try_send(msg).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(m) => Refused::Full(m),
            tokio::sync::mpsc::error::TrySendError::Closed(_) => Refused::Closed,
        })
    }
}

pub struct Link<S, T> {
    tx: S,
    overflow: VecDeque<T>,
}

impl<T, S: TrySend<T>> Link<S, T> {
    pub fn new(tx: S) -> Link<S, T> {
        Link { tx, overflow: VecDeque::new() }
    }

    pub fn send(&mut self, msg: T) {
        if !self.overflow.is_empty() {
            return self.overflow.push_back(msg);
        }
        match self.tx.try_send_one(msg) {
            Ok(()) | Err(Refused::Closed) => {}
            Err(Refused::Full(msg)) => self.overflow.push_back(msg),
        }
    }

    /// Moves overflow into the channel as room allows.
    pub fn flush(&mut self) {
        while let Some(msg) = self.overflow.pop_front() {
            match self.tx.try_send_one(msg) {
                Ok(()) => {}
                Err(Refused::Full(msg)) => {
                    self.overflow.push_front(msg);
                    return;
                }
                Err(Refused::Closed) => self.overflow.clear(),
            }
        }
    }

    /// True while messages wait here: stop reading sockets.
    pub fn congested(&self) -> bool {
        !self.overflow.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_keeps_order_and_drains() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let mut link = Link::new(tx);
        for i in 0..5 {
            link.send(i);
        }
        assert!(link.congested());
        assert_eq!((rx.recv().unwrap(), rx.recv().unwrap()), (0, 1));
        link.flush();
        assert!(link.congested(), "one still waits");
        assert_eq!((rx.recv().unwrap(), rx.recv().unwrap()), (2, 3));
        link.flush();
        assert!(!link.congested());
        assert_eq!(rx.recv().unwrap(), 4);
        drop(rx);
        link.send(5);
        assert!(!link.congested(), "a closed channel keeps nothing");
    }
}
