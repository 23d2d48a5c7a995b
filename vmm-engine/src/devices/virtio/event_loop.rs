//! The I/O event loop: one thread waiting in epoll on the queue EventFds
//! and the taps, running device backends when they are ready. vCPU threads
//! never do device I/O; they only signal an EventFd (or KVM does, through
//! an ioeventfd).
//!
//! Handlers are registered with [`EventLoop::add`] from any thread (epoll is
//! thread-safe) and removed with [`EventLoop::remove`]. Dropping the loop (or
//! [`EventLoop::shutdown`]) stops and joins the thread.

use std::collections::HashMap;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// A callback run on the loop thread when its fd is ready.
pub type Handler = Arc<dyn Fn(EventSet) + Send + Sync>;

/// Identifies a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token(u64);

const STOP_TOKEN: u64 = 0;

struct Shared {
    epoll: Epoll,
    handlers: Mutex<HashMap<u64, (RawFd, Handler)>>,
    next: AtomicU64,
    stop: AtomicBool,
    stop_evt: EventFd,
}

/// The I/O thread. Cheap to share: clone the [`EventLoopHandle`].
pub struct EventLoop {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A handle for registering fds from other threads.
#[derive(Clone)]
pub struct EventLoopHandle {
    shared: Arc<Shared>,
}

impl EventLoop {
    /// Starts the loop thread, named `name`.
    pub fn start(name: &str) -> io::Result<Self> {
        let stop_evt = EventFd::new(EFD_NONBLOCK)?;
        let shared = Arc::new(Shared {
            epoll: Epoll::new()?,
            handlers: Mutex::new(HashMap::new()),
            next: AtomicU64::new(STOP_TOKEN + 1),
            stop: AtomicBool::new(false),
            stop_evt,
        });
        shared.epoll.ctl(
            ControlOperation::Add,
            shared.stop_evt.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP_TOKEN),
        )?;
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(s))?;
        Ok(EventLoop {
            shared,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> EventLoopHandle {
        EventLoopHandle {
            shared: self.shared.clone(),
        }
    }

    /// See [`EventLoopHandle::add`].
    pub fn add(&self, fd: RawFd, events: EventSet, handler: Handler) -> io::Result<Token> {
        self.handle().add(fd, events, handler)
    }

    /// See [`EventLoopHandle::remove`].
    pub fn remove(&self, token: Token) {
        self.handle().remove(token)
    }

    /// Stops the thread and waits for it. Handlers are dropped.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.shared.stop_evt.write(1);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("virtio event loop thread panicked");
            }
        }
        self.shared
            .handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.stop();
    }
}

impl EventLoopHandle {
    /// Watches `fd` for `events` and runs `handler` on the loop thread when
    /// they happen. The caller keeps `fd` open until it calls `remove`.
    pub fn add(&self, fd: RawFd, events: EventSet, handler: Handler) -> io::Result<Token> {
        let id = self.shared.next.fetch_add(1, Ordering::SeqCst);
        self.shared
            .handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (fd, handler));
        if let Err(e) =
            self.shared
                .epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(events, id))
        {
            self.shared
                .handlers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(e);
        }
        Ok(Token(id))
    }

    /// Stops watching a registration. A handler already running finishes.
    pub fn remove(&self, token: Token) {
        let entry = self
            .shared
            .handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token.0);
        if let Some((fd, _)) = entry {
            let _ = self.shared.epoll.ctl(
                ControlOperation::Delete,
                fd,
                EpollEvent::new(EventSet::empty(), 0),
            );
        }
    }
}

fn run(shared: Arc<Shared>) {
    crate::sandbox::enter(crate::sandbox::Role::IoLoop);
    let mut events = vec![EpollEvent::default(); 64];
    loop {
        let n = match shared.epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("virtio event loop: epoll_wait failed: {e}");
                return;
            }
        };
        for ev in events.iter().take(n) {
            if ev.data() == STOP_TOKEN {
                let _ = shared.stop_evt.read();
                continue;
            }
            let handler = shared
                .handlers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&ev.data())
                .map(|(_, h)| h.clone());
            if let Some(h) = handler {
                // A bug in one backend must not stop every device's I/O.
                let set = ev.event_set();
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(set))).is_err() {
                    log::error!("virtio event loop: a device handler panicked");
                }
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn runs_handler_on_its_thread_and_stops() {
        let el = EventLoop::start("test-loop").unwrap();
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let evt2 = evt.try_clone().unwrap();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let tok = el
            .add(
                evt.as_raw_fd(),
                EventSet::IN,
                Arc::new(move |_| {
                    let v = evt2.read().unwrap_or(0);
                    let name = std::thread::current().name().map(String::from);
                    let _ = tx.lock().unwrap().send((v, name));
                }),
            )
            .unwrap();
        evt.write(3).unwrap();
        let (v, name) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(v, 3);
        assert_eq!(name.as_deref(), Some("test-loop"));
        el.remove(tok);
        evt.write(1).unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        el.shutdown();
    }
}
