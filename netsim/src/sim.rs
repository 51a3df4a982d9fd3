//! A whole simulated WAN: the links of a topology, one UDP relay per
//! ordered pair of gateways in different regions, and the control API.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::NetsimError;
use crate::control::ControlServer;
use crate::network::Network;
use crate::topology::Topology;
use crate::udp::UdpRelay;

/// One relay: `from_gateway` dials `listen` to reach `to_gateway` at
/// `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    pub from_gateway: String,
    pub from_region: String,
    pub to_gateway: String,
    pub to_region: String,
    pub listen: SocketAddr,
    pub target: SocketAddr,
}

/// A running netsim; dropping it stops every relay and the control API.
#[derive(Debug)]
pub struct Netsim {
    network: Arc<Network>,
    relays: Vec<RelayInfo>,
    _udp: Vec<UdpRelay>,
    control: ControlServer,
}

impl Netsim {
    /// Starts the relays and the control API of `topology`.
    pub async fn start(topology: &Topology) -> Result<Netsim, NetsimError> {
        let network = Arc::new(Network::new(
            &topology.region_names(),
            topology.seed,
            |from, to| topology.links[&(from.to_owned(), to.to_owned())].clone(),
        ));
        let mut relays = Vec::new();
        let mut udp = Vec::new();
        for (i, (from, to)) in topology.relay_pairs().enumerate() {
            let port = topology.relay_base_port.map_or(0, |base| base + i as u16);
            let listen = SocketAddr::from(([127, 0, 0, 1], port));
            let relay = UdpRelay::bind(
                listen,
                to.addr,
                network.link(&from.region, &to.region)?,
                network.link(&to.region, &from.region)?,
            )
            .await
            .map_err(|source| NetsimError::Bind {
                what: format!("the relay {} -> {}", from.name, to.name),
                addr: listen,
                source,
            })?;
            relays.push(RelayInfo {
                from_gateway: from.name.clone(),
                from_region: from.region.clone(),
                to_gateway: to.name.clone(),
                to_region: to.region.clone(),
                listen: relay.local_addr(),
                target: to.addr,
            });
            udp.push(relay);
        }
        let control =
            ControlServer::bind(topology.control, network.clone(), relays.clone()).await?;
        Ok(Netsim {
            network,
            relays,
            _udp: udp,
            control,
        })
    }

    pub fn network(&self) -> &Arc<Network> {
        &self.network
    }

    pub fn relays(&self) -> &[RelayInfo] {
        &self.relays
    }

    /// The address `from` dials to reach `to` through the simulated WAN.
    pub fn dial_addr(&self, from: &str, to: &str) -> Option<SocketAddr> {
        self.relays
            .iter()
            .find(|r| r.from_gateway == from && r.to_gateway == to)
            .map(|r| r.listen)
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.control.local_addr()
    }
}
