//! A TCP proxy in front of the test broker that a test can take down and bring back: a network
//! outage on demand, without disturbing the other tests that share the broker.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The proxy; down while dropped.
///
/// ```no_run
/// # async fn demo() {
/// let proxy = busway_testkit::proxy::Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
/// // connect the client under test to `proxy.addr`, then:
/// proxy.down();      // every connection through it is cut, new ones refused
/// proxy.up().await;  // accepted again on the same port
/// # }
/// ```
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    upstream: SocketAddr,
    /// Bumped to cut every open connection.
    cut: watch::Sender<u64>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    /// Starts a proxy to `upstream` on a free local port.
    pub async fn start(upstream: SocketAddr) -> Arc<Self> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), upstream).await
    }

    /// Starts a proxy to `upstream` listening on `listen` (port 0: a free one), for clients whose
    /// address must be known in advance (e.g. a broker that advertises the proxy's address).
    pub async fn start_at(listen: SocketAddr, upstream: SocketAddr) -> Arc<Self> {
        let listener = TcpListener::bind(listen).await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cut, _) = watch::channel(0);
        let proxy = Arc::new(Self {
            addr,
            upstream,
            cut,
            acceptor: Mutex::new(None),
        });
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream;
        let cut = self.cut.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut cut = cut.clone();
                // Only cuts after this connection was accepted count for it.
                cut.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        *self.acceptor.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Cuts every open connection, as a network failure would, and keeps accepting new ones.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// The outage begins: open connections are cut and new ones refused.
    pub fn down(&self) {
        if let Some(task) = self
            .acceptor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        self.cut.send_modify(|n| *n += 1);
    }

    /// The outage ends: connections are accepted again on the same port.
    pub async fn up(&self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                // The aborted listener may take a moment to release the port.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }
}
