//! The control API: newline-delimited JSON over TCP on loopback, one
//! request and one response per line, so that `strait-netsim` verbs, tests
//! and a plain `nc` can drive a running netsim.
//!
//! ```text
//! {"op":"partition","a":"eu-west","b":"us-east","oneway":false}
//! {"ok":true}
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::NetsimError;
use crate::network::{LinkChange, LinkReport, Network};
use crate::sim::RelayInfo;

const MAX_REQUEST: u64 = 64 * 1024;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Cut a->b, and b->a unless `oneway`.
    Partition {
        a: String,
        b: String,
        #[serde(default)]
        oneway: bool,
    },
    /// Cut every link into and out of a region.
    Isolate { region: String },
    /// Heal a<->b, or everything when no pair is given.
    Heal {
        #[serde(default)]
        a: Option<String>,
        #[serde(default)]
        b: Option<String>,
    },
    /// Change link settings of a->b, and b->a unless `oneway`.
    Set {
        a: String,
        b: String,
        #[serde(default)]
        oneway: bool,
        change: LinkChange,
    },
    /// Settings and counters of every link.
    Stats,
    /// The relays and the addresses to dial.
    Relays,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<LinkReport>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relays: Option<Vec<RelayInfo>>,
}

impl Response {
    fn error(message: String) -> Self {
        Response {
            ok: false,
            error: Some(message),
            ..Default::default()
        }
    }
}

/// Carries out one request against the network.
pub fn handle(network: &Network, relays: &[RelayInfo], req: Request) -> Response {
    let done = |r: Result<(), NetsimError>| match r {
        Ok(()) => Response {
            ok: true,
            ..Default::default()
        },
        Err(e) => Response::error(e.to_string()),
    };
    match req {
        Request::Partition { a, b, oneway } => done(network.partition(&a, &b, oneway)),
        Request::Isolate { region } => done(network.isolate(&region)),
        Request::Heal {
            a: Some(a),
            b: Some(b),
        } => done(network.heal(Some((&a, &b)))),
        Request::Heal { a: None, b: None } => done(network.heal(None)),
        Request::Heal { .. } => {
            Response::error("heal takes two regions, or none to heal everything".into())
        }
        Request::Set {
            a,
            b,
            oneway,
            change,
        } => done(network.set(&a, &b, oneway, &change)),
        Request::Stats => Response {
            ok: true,
            links: Some(network.report()),
            ..Default::default()
        },
        Request::Relays => Response {
            ok: true,
            relays: Some(relays.to_vec()),
            ..Default::default()
        },
    }
}

/// The control API server; dropping it stops it.
#[derive(Debug)]
pub struct ControlServer {
    local: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl ControlServer {
    pub async fn bind(
        addr: SocketAddr,
        network: Arc<Network>,
        relays: Vec<RelayInfo>,
    ) -> Result<ControlServer, NetsimError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| NetsimError::Bind {
                what: "the control API".into(),
                addr,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| NetsimError::Bind {
            what: "the control API".into(),
            addr,
            source,
        })?;
        let (shutdown, mut rx) = watch::channel(false);
        let relays: Arc<[RelayInfo]> = relays.into();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = rx.changed() => return,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        tokio::spawn(serve(stream, network.clone(), relays.clone()));
                    }
                }
            }
        });
        Ok(ControlServer { local, shutdown })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn serve(stream: TcpStream, network: Arc<Network>, relays: Arc<[RelayInfo]>) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    loop {
        let mut line = String::new();
        let n = match (&mut reader).take(MAX_REQUEST).read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let response = if n as u64 == MAX_REQUEST && !line.ends_with('\n') {
            Response::error(format!("request longer than {MAX_REQUEST} bytes"))
        } else if line.trim().is_empty() {
            continue;
        } else {
            match serde_json::from_str::<Request>(&line) {
                Ok(req) => handle(&network, &relays, req),
                Err(e) => Response::error(format!("bad request: {e}")),
            }
        };
        let mut out = serde_json::to_string(&response).unwrap_or_else(|_| r#"{"ok":false}"#.into());
        out.push('\n');
        if w.write_all(out.as_bytes()).await.is_err() {
            return;
        }
        if n as u64 == MAX_REQUEST && !line.ends_with('\n') {
            return;
        }
    }
}

/// Sends one request to a running netsim and returns its response; a
/// refused request is an error carrying netsim's message.
pub async fn request(addr: SocketAddr, req: &Request) -> Result<Response, NetsimError> {
    let fail = |message: String| NetsimError::Control { addr, message };
    let exchange = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| {
            fail(format!(
                "cannot connect ({e}); is `strait-netsim run` running?"
            ))
        })?;
        let (r, mut w) = stream.into_split();
        let mut line = serde_json::to_string(req).map_err(|e| fail(e.to_string()))?;
        line.push('\n');
        w.write_all(line.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut answer = String::new();
        BufReader::new(r)
            .read_line(&mut answer)
            .await
            .map_err(|e| fail(e.to_string()))?;
        serde_json::from_str::<Response>(&answer)
            .map_err(|e| fail(format!("unreadable answer: {e}")))
    };
    let response = tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| fail("no answer within 5 s".into()))??;
    match (&response.ok, &response.error) {
        (false, Some(e)) => Err(fail(e.clone())),
        (false, None) => Err(fail("request refused".into())),
        _ => Ok(response),
    }
}
